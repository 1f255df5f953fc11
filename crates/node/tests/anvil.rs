//! End-to-end on a chain: `devnet --settlement anvil` in this process. Chats
//! settle on anvil through the contracts, a cheating node's stake is slashed
//! on chain, the token total is conserved, and anvil killed mid-run (and
//! restarted by the devnet on its state file) loses no settlement.

use std::path::Path;
use std::time::{Duration, Instant};
use verinfer_inference::respond::Fault;
use verinfer_ledger::evm::chain::Chain;
use verinfer_ledger::evm::{evm_signer, Address, B256};
use verinfer_node::devnet::{self, DevnetOptions, Settlement};
use verinfer_node::testing::{chat, get_json};

fn key(dir: &Path, name: &str) -> verinfer_types::SecretKey {
    verinfer_node::config::load_key(&dir.join(format!("{name}.key"))).expect("key")
}

fn addr(k: &verinfer_types::SecretKey) -> Address {
    evm_signer(k).expect("evm key").address()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devnet_settles_and_slashes_on_anvil_through_a_chain_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let mut opts = DevnetOptions::new(d.to_path_buf());
    opts.listen = "127.0.0.1:0".into();
    opts.heartbeat = Duration::from_millis(500);
    opts.settlement = Settlement::Anvil;
    opts.faulty_inference = 1;
    opts.fault = Fault::EditToken(1);
    let net = devnet::run(opts).await.expect("devnet on anvil");
    let c = net.chain.as_ref().expect("a chain");
    let chain = Chain::reader(&c.url, c.deployment.contract)
        .await
        .expect("rpc");
    let supply = chain.token_supply().await.expect("supply");
    let demo = key(d, "gateway/demo");
    let deposit = chain.balance(addr(&demo)).await.expect("balance");
    assert!(deposit > 0, "the demo account is funded on chain");
    let http = reqwest::Client::new();

    for i in 0..6 {
        if i == 3 {
            // Kill anvil outright; the devnet restarts it on its state file.
            let pid = c.anvil.lock().expect("anvil").pid();
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success());
        }
        let r = chat(
            &http,
            &net.url,
            &net.api_key,
            &format!("Name a colour, number {i}."),
            8,
            i % 2 == 0,
        )
        .await
        .expect("chat");
        assert_eq!(r.status, 200, "{}", r.text);
    }

    // Everything the log holds settles on chain, with every slash.
    let ledger = &net.ledger;
    let size = ledger.receipts().size();
    assert!(size >= 6);
    let cheater = key(d, "inference-0/node");
    let slashes = ledger.slashes();
    assert!(!slashes.is_empty(), "the cheating node was caught");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (settled, root) = chain.checkpoint().await.unwrap_or((0, B256::ZERO));
        let mut all_slashed = true;
        for s in &slashes {
            let tx = ledger.transaction(s.wal_index).expect("slash tx");
            let verinfer_ledger::tx::TxBody::Slash { evidence } = tx.body else {
                panic!("not a slash")
            };
            let (result, who) =
                verinfer_ledger::evm::netting::evidence_subject(&evidence).expect("subject");
            assert_eq!(who, cheater.public());
            all_slashed &= chain
                .is_slashed(B256::from(result.0), addr(&cheater))
                .await
                .unwrap_or(false);
        }
        if settled == size && all_slashed {
            assert_eq!(root.0, ledger.receipts().root(size).expect("root").0);
            break;
        }
        if Instant::now() > deadline {
            let settler = net
                .role("ledger")
                .and_then(|r| r.ledger.as_ref())
                .and_then(|l| l.settler().cloned());
            let why = match settler {
                Some(s) => format!("{:?}", s.slash_pending().await),
                None => "no settler".into(),
            };
            panic!(
                "chain settled {settled} of {size} receipts, all slashes: {all_slashed} ({why})"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The chain paid what the ledger paid, and lost no token.
    let f = ledger.fee_totals();
    assert_eq!(
        chain.balance(addr(&demo)).await.expect("balance"),
        deposit - f.total
    );
    let paid = |names: Vec<String>| {
        let chain = chain.clone();
        async move {
            let mut sum = 0u128;
            for n in names {
                sum += chain.balance(addr(&key(d, &n))).await.expect("balance");
            }
            sum
        }
    };
    let nodes = paid(vec!["inference-0/node".into(), "inference-1/node".into()]).await;
    assert_eq!(
        nodes, f.node,
        "the cheater earned nothing, the honest node its fees"
    );
    let verifiers: u128 = paid((0..3).map(|i| format!("verifier-{i}/node")).collect()).await;
    let treasury = chain
        .balance(addr(&key(d, "treasury")))
        .await
        .expect("balance");
    // Slashes credit the committee and the treasury too: fees are the floor.
    assert!(verifiers >= f.verifiers && treasury >= f.treasury);
    let (escrow, staked, unbonding) = chain.totals().await.expect("totals");
    assert_eq!(
        chain
            .token_balance(c.deployment.contract)
            .await
            .expect("balance"),
        escrow + staked + unbonding
    );
    let mut held = chain
        .token_balance(c.deployment.contract)
        .await
        .expect("balance");
    held += chain
        .token_balance(addr(&key(d, "treasury")))
        .await
        .expect("balance");
    assert_eq!(
        held, supply,
        "every token is in the contract or the treasury's wallet"
    );
    let stake = chain.stake(addr(&cheater)).await.expect("stake");
    let honest = chain
        .stake(addr(&key(d, "inference-1/node")))
        .await
        .expect("stake");
    assert!(stake < honest, "the cheater's stake shrank on chain");

    // The ledger role lists the transactions for the explorer.
    let ledger_url = &net.role("ledger").expect("ledger").url;
    let status: serde_json::Value = get_json(&http, &format!("{ledger_url}/ledger/evm"))
        .await
        .expect("status");
    assert_eq!(status["backend"], "evm");
    assert_eq!(status["settled_size"], size);
    let txs = status["transactions"].as_array().expect("transactions");
    assert!(txs.iter().any(|t| t["kind"] == "checkpoint"));
    assert!(txs.iter().any(|t| t["kind"] == "slash"));
    // The explorer shows them (through the gateway).
    let explorer: serde_json::Value =
        get_json(&http, &format!("{}/v1/explorer/settlement", net.url))
            .await
            .expect("explorer");
    assert_eq!(explorer["chain"]["settled_size"], size);
    assert_eq!(
        explorer["chain"]["contract"],
        serde_json::json!(c.deployment.contract)
    );
    assert!(!explorer["chain"]["transactions"]
        .as_array()
        .expect("transactions")
        .is_empty());
    net.stop();
}
