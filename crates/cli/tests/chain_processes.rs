//! A network that settles on an EVM chain, set up and run the way an
//! operator would on a real one: `verinfer chain deploy | register |
//! deposit | link` against the chain (anvil here), then one `verinfer node`
//! process per role with `[ledger] backend = "evm"` in the ledger's config.
//! Chats settle on chain: the settled root is the log's, the requester's
//! escrow on chain is its deposit less exactly the fees the ledger charged,
//! and every token is accounted for. A deposit and a withdrawal request made
//! on chain while the network runs reach the ledger (its bridge), which then
//! agrees with the chain on the requester's escrow.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{free_port, init_devnet, member_config, node, run_ok as verinfer, wait_ready, write};
use verinfer_ledger::evm::anvil::{dev_signer, Anvil};
use verinfer_ledger::evm::chain::{fund_gas, Chain, U256};
use verinfer_ledger::evm::{evm_signer, Address, B256};
use verinfer_ledger::Ledger;
use verinfer_node::testing::{chat, get_json};
use verinfer_types::SecretKey;

fn key(p: &Path) -> SecretKey {
    verinfer_node::config::load_key(p).unwrap()
}

fn addr(p: &Path) -> Address {
    evm_signer(&key(p)).unwrap().address()
}

#[test]
fn node_processes_with_the_evm_backend_settle_chats_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (api_key, model) = init_devnet(d);
    let (min_stake, supply, deposit) = {
        let l = Ledger::open(&d.join("ledger")).unwrap();
        let demo = key(&d.join("gateway/demo.key")).public();
        l.with_state(|st| (st.params.min_stake.0, st.total_supply, st.balance(&demo)))
    };
    let members: Vec<(&str, String)> = (0..3)
        .map(|i| ("verifier", format!("verifier-{i}")))
        .chain([("inference", "inference-0".to_string())])
        .collect();

    let mut anvil = Anvil::start(&d.join("anvil-state.json"), 0).unwrap();
    let rpc = anvil.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Gas money: on a real chain these accounts would buy it.
    let gas_for: Vec<Address> = [
        d.join("treasury.key"),
        d.join("ledger/node.key"),
        d.join("gateway/demo.key"),
    ]
    .iter()
    .chain(
        members
            .iter()
            .map(|(_, n)| d.join(n).join("node.key"))
            .collect::<Vec<_>>()
            .iter(),
    )
    .map(|p| addr(p))
    .collect();
    rt.block_on(fund_gas(
        &rpc,
        dev_signer(),
        &gas_for,
        U256::from(10u128.pow(20)),
    ))
    .unwrap();

    // Deploy for this ledger, with a new token whose supply is the ledger's.
    let deployment: serde_json::Value = serde_json::from_str(&verinfer(&[
        "chain",
        "deploy",
        "--rpc",
        &rpc,
        "--key",
        &s(&d.join("treasury.key")),
        "--ledger",
        &s(&d.join("ledger")),
        "--supply",
        &supply.to_string(),
    ]))
    .unwrap();
    let contract = deployment["contract"].as_str().unwrap().to_string();
    let at = ["--rpc", rpc.as_str(), "--contract", contract.as_str()];
    let treasury = rt
        .block_on(Chain::at(
            &rpc,
            evm_signer(&key(&d.join("treasury.key"))).unwrap(),
            contract.parse().unwrap(),
        ))
        .unwrap();
    for (role, name) in &members {
        let k = d.join(name).join("node.key");
        rt.block_on(treasury.send_tokens(addr(&k), U256::from(min_stake)))
            .unwrap();
        let mut args = vec!["chain", "register"];
        args.extend(at);
        let (stake, k) = (min_stake.to_string(), s(&k));
        args.extend([
            "--key",
            &k,
            "--role",
            role,
            "--stake",
            &stake,
            "--endpoint",
            name,
        ]);
        verinfer(&args);
    }
    let mut args = vec!["chain", "deposit"];
    args.extend(at);
    let (tk, dk, amount) = (
        s(&d.join("treasury.key")),
        s(&d.join("gateway/demo.key")),
        deposit.to_string(),
    );
    args.extend(["--key", &tk, "--account", &dk, "--amount", &amount]);
    verinfer(&args);
    // That deposit mirrors the demo's balance at genesis: bridge what follows.
    let from_block = rt.block_on(treasury.head()).unwrap() + 1;

    // The network, one process per role; the ledger settles on the chain.
    let ledger_url = format!("http://127.0.0.1:{}", free_port());
    let ledger_cfg = write(
        d.join("ledger/node.toml"),
        format!(
            "role = \"ledger\"\nkey = \"node.key\"\nlisten = \"{}\"\n\n[ledger]\nwitness_quorum = 2\ncheckpoint_interval_ms = 300\nbackend = \"evm\"\nrpc_url = \"{rpc}\"\ncontract = \"{contract}\"\nstuck_after_secs = 5\nbridge_key = \"../treasury.key\"\nbridge_from_block = {from_block}\nconfirmations = 0\n",
            ledger_url.trim_start_matches("http://")
        ),
    );
    let mut procs = vec![node("ledger", &ledger_cfg).0];
    for (role, name) in &members {
        procs.push(node(role, &member_config(d, name, &ledger_url, &model)).0);
    }
    let gw_cfg = write(
        d.join("gateway/node.toml"),
        format!(
            "key = \"node.key\"\nlisten = \"127.0.0.1:0\"\nledger_url = \"{ledger_url}\"\n\n[gateway]\napi_keys = \"api-keys.toml\"\nquorum = 2\n"
        ),
    );
    let (gw, url) = node("gateway", &gw_cfg);
    procs.push(gw);
    // The treasury takes its share of every fee: its address must be known.
    verinfer(&["chain", "link", "--key", &tk, "--ledger-url", &ledger_url]);

    const CHATS: u64 = 4;
    let http = reqwest::Client::new();
    rt.block_on(async {
        wait_ready(&http, &url, 1, 3).await;
        for i in 0..CHATS {
            let r = chat(
                &http,
                &url,
                &api_key,
                &format!("Name {i} colours."),
                8,
                i % 2 == 0,
            )
            .await
            .unwrap();
            assert_eq!(
                (r.status, r.verification()),
                (200, "verified"),
                "{}",
                r.text
            );
        }
    });

    // Settled on chain, through `verinfer chain status`.
    let mut args = vec!["chain", "status"];
    args.extend(at);
    let demo = addr(&d.join("gateway/demo.key")).to_string();
    args.extend(["--address", &demo]);
    let t = Instant::now();
    let status = loop {
        let v: serde_json::Value = serde_json::from_str(&verinfer(&args)).unwrap();
        if v["settled"]["size"] == CHATS {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not settled on chain: {v}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    // Made on chain while the network runs: a deposit, then a withdrawal
    // request; the ledger mirrors both.
    const EXTRA: u128 = 3_000_000;
    const ASKED: u128 = 1_000_000;
    let mut args = vec!["chain", "deposit"];
    args.extend(at);
    let extra = EXTRA.to_string();
    args.extend(["--key", &tk, "--account", &dk, "--amount", &extra]);
    verinfer(&args);
    let mut args = vec!["chain", "withdraw"];
    args.extend(at);
    let asked = ASKED.to_string();
    args.extend(["--key", &dk, "--amount", &asked]);
    verinfer(&args);
    rt.block_on(async {
        let t = Instant::now();
        loop {
            let s: verinfer_node::wire::SummaryView =
                get_json(&http, &format!("{ledger_url}/v1/ledger/summary"))
                    .await
                    .unwrap();
            if s.withdrawing == ASKED {
                assert!(s.conserved(), "{s:?}");
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "not mirrored: {s:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // Stop the network and compare with its ledger.
    drop(procs);
    let l = Ledger::open(&d.join("ledger")).unwrap();
    let root = l.receipts().root(CHATS).unwrap();
    assert_eq!(
        status["settled"]["root"].as_str().unwrap(),
        B256::from(root.0).to_string(),
        "the chain settled the log's history"
    );
    let fees = l.fee_totals();
    assert_eq!(fees.receipts, CHATS);
    assert_eq!(
        status["account"]["balance"].as_str().unwrap(),
        (deposit - fees.total).to_string(),
        "the requester paid each fee once"
    );
    let demo_key = key(&d.join("gateway/demo.key")).public();
    let (here, held) = l.with_state(|s| {
        (
            s.balance(&demo_key),
            s.withdrawing.get(&demo_key).map_or(0, |w| w.held),
        )
    });
    assert_eq!(held, ASKED);
    rt.block_on(async {
        let demo = addr(&d.join("gateway/demo.key"));
        assert_eq!(
            treasury.balance(demo).await.unwrap(),
            here + held,
            "the ledger and the chain agree on the requester's escrow"
        );
        let (escrow, staked, unbonding) = treasury.totals().await.unwrap();
        let held = treasury.token_balance(treasury.contract).await.unwrap();
        assert_eq!(held, escrow + staked + unbonding);
        let mut sum = held;
        for a in &gas_for {
            sum += treasury.token_balance(*a).await.unwrap();
        }
        assert_eq!(
            sum,
            treasury.token_supply().await.unwrap(),
            "every token is accounted for"
        );
    });
    anvil.stop();
}
