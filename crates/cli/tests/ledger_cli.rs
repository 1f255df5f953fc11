//! `verinfer ledger ...` drives a genesis through transfers, staking, a
//! governance vote and a slash from the command line.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use verinfer_ledger::testing::World;
use verinfer_ledger::tx::Evidence;
use verinfer_ledger::Summary;
use verinfer_types::records::Decision;
use verinfer_types::{Record, SecretKey};

const TOKEN: u128 = 1_000_000_000_000_000_000;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> Value {
    let out = run(args);
    assert!(
        out.status.success(),
        "verinfer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn key_file(dir: &Path, name: &str, key: &SecretKey) -> String {
    let p = dir.join(name);
    std::fs::write(&p, key.to_file_text()).unwrap();
    p.to_str().unwrap().to_string()
}

/// Amounts are JSON integers beyond 2^64: parse them typed, not as Value.
#[derive(serde::Deserialize)]
struct Account {
    balance: u128,
    stake: u128,
    nonce: u64,
    node: Option<Value>,
}

fn account(d: &str, key: &SecretKey) -> Account {
    let out = run(&["ledger", "account", "--dir", d, &key.public().to_hex()]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn summary(d: &str) -> Summary {
    let out = run(&["ledger", "summary", "--dir", d]);
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn genesis_transfers_stake_vote_and_slash() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("ledger");
    let d = d.to_str().unwrap();
    let w = World::new();
    let treasury = key_file(tmp.path(), "treasury.key", &w.treasury);
    let node = key_file(tmp.path(), "node.key", &w.nodes[0]);
    let verifiers: Vec<String> = (0..3)
        .map(|i| key_file(tmp.path(), &format!("v{i}.key"), &w.verifiers[i]))
        .collect();

    let supply = 1_000_000 * TOKEN;
    let g = ok(&[
        "ledger",
        "init",
        "--dir",
        d,
        "--treasury-key",
        &treasury,
        "--supply",
        &supply.to_string(),
    ]);
    assert_eq!(
        g["treasury"].as_str().unwrap(),
        w.treasury.public().to_hex()
    );

    let gateway = key_file(tmp.path(), "gateway.key", &w.gateway);
    let stakers: Vec<(&str, SecretKey)> = std::iter::once((node.as_str(), w.nodes[0].clone()))
        .chain(std::iter::once((gateway.as_str(), w.gateway.clone())))
        .chain(
            verifiers
                .iter()
                .map(|v| v.as_str())
                .zip(w.verifiers.iter().cloned()),
        )
        .collect();
    for (file, key) in &stakers {
        let amount = (5_000 * TOKEN).to_string();
        ok(&[
            "ledger",
            "transfer",
            "--dir",
            d,
            "--key",
            &treasury,
            "--to",
            &key.public().to_hex(),
            "--amount",
            &amount,
        ]);
        ok(&[
            "ledger",
            "stake",
            "--dir",
            d,
            "--key",
            file,
            "--amount",
            &(1_500 * TOKEN).to_string(),
        ]);
    }
    ok(&[
        "ledger",
        "register",
        "--dir",
        d,
        "--key",
        &node,
        "--role",
        "inference",
        "--endpoint",
        "http://127.0.0.1:7001",
    ]);
    for v in &verifiers {
        ok(&[
            "ledger",
            "register",
            "--dir",
            d,
            "--key",
            v,
            "--role",
            "verifier",
            "--endpoint",
            "http://127.0.0.1:7002",
        ]);
    }
    let acct = account(d, &w.nodes[0]);
    // Staking and registering each paid the transaction fee.
    let fee = verinfer_ledger::tx::Params::default().tx_fee.0;
    assert_eq!(acct.balance, 3_500 * TOKEN - 2 * fee);
    assert_eq!(acct.stake, 1_500 * TOKEN);
    assert_eq!(acct.nonce, 2);

    // A refused transaction exits 1 with the reason and changes nothing.
    let before = summary(d);
    let out = run(&[
        "ledger",
        "transfer",
        "--dir",
        d,
        "--key",
        &node,
        "--to",
        &w.treasury.public().to_hex(),
        "--amount",
        &(10_000 * TOKEN).to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("insufficient balance"));
    assert_eq!(summary(d), before);

    // Governance: three of four equal stakers vote to raise the quorum.
    let p = ok(&[
        "ledger",
        "propose",
        "--dir",
        d,
        "--key",
        &verifiers[0],
        "--param",
        "quorum",
        "--value",
        "2",
    ]);
    let id = p["proposal"].to_string();
    ok(&[
        "ledger",
        "vote",
        "--dir",
        d,
        "--key",
        &verifiers[0],
        "--proposal",
        &id,
        "--yes",
    ]);
    ok(&[
        "ledger",
        "vote",
        "--dir",
        d,
        "--key",
        &verifiers[1],
        "--proposal",
        &id,
        "--yes",
    ]);
    ok(&[
        "ledger",
        "vote",
        "--dir",
        d,
        "--key",
        &node,
        "--proposal",
        &id,
        "--no",
    ]);
    ok(&[
        "ledger",
        "vote",
        "--dir",
        d,
        "--key",
        &verifiers[2],
        "--proposal",
        &id,
        "--yes",
    ]);
    let out = run(&[
        "ledger",
        "vote",
        "--dir",
        d,
        "--key",
        &treasury,
        "--proposal",
        &id,
        "--yes",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a voter without stake was accepted"
    );

    // Slash the inference node with a committee of three rejecting verdicts,
    // registered when the gateway committed to the Result.
    let req = w.request(&w.users[0], 1, 1);
    let result = w.result(&req, 0);
    ok(&[
        "ledger",
        "register",
        "--dir",
        d,
        "--key",
        &gateway,
        "--role",
        "gateway",
        "--endpoint",
        "http://127.0.0.1:7003",
    ]);
    ok(&[
        "ledger",
        "commit",
        "--dir",
        d,
        "--key",
        &gateway,
        "--result",
        &result.hash().unwrap().to_hex(),
    ]);
    let evidence = Evidence::Node {
        request: req,
        committee: (0..3)
            .map(|v| w.verdict(&result, v, Decision::Reject))
            .collect(),
        result,
    };
    let ev = tmp.path().join("evidence.json");
    std::fs::write(&ev, serde_json::to_vec(&evidence).unwrap()).unwrap();
    let ev = ev.to_str().unwrap();
    ok(&[
        "ledger",
        "slash",
        "--dir",
        d,
        "--key",
        &treasury,
        "--evidence",
        ev,
    ]);
    let acct = account(d, &w.nodes[0]);
    assert_eq!(acct.stake, 750 * TOKEN);
    assert!(
        acct.node.is_none(),
        "a node below the minimum stake stays registered"
    );
    let out = run(&[
        "ledger",
        "slash",
        "--dir",
        d,
        "--key",
        &treasury,
        "--evidence",
        ev,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the same fault was slashed twice"
    );

    let s = summary(d);
    assert_eq!(s.total_supply, supply);
    assert_eq!(
        s.balances + s.escrow + s.stakes + s.unbonding + s.treasury,
        supply
    );
}

/// A transaction written by the CLI into a ledger that a running node owns
/// would be overwritten by the node's next one: the CLI is refused instead.
#[test]
fn commands_against_an_open_ledger_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ledger");
    let d = dir.to_str().unwrap();
    let w = World::new();
    let treasury = key_file(tmp.path(), "treasury.key", &w.treasury);
    ok(&[
        "ledger",
        "init",
        "--dir",
        d,
        "--treasury-key",
        &treasury,
        "--supply",
        &(1_000 * TOKEN).to_string(),
    ]);
    let transfer = [
        "ledger",
        "transfer",
        "--dir",
        d,
        "--key",
        &treasury,
        "--to",
        &w.nodes[0].public().to_hex(),
        "--amount",
        "5",
    ];
    let live = verinfer_ledger::Ledger::open(&dir).unwrap();
    let height = live.with_state(|s| s.height);
    let out = run(&transfer);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let in_use = format!("data directory in use (pid {})", std::process::id());
    assert!(err.contains(&in_use), "{err}");
    assert_eq!(live.with_state(|s| s.height), height);
    drop(live);
    // A child that another test thread forked while the ledger was open holds
    // the lock's file until it execs; on a loaded machine that takes a while.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = run(&transfer);
        if out.status.success() {
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&in_use) && std::time::Instant::now() < deadline,
            "transfer after the ledger closed: {err}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(account(d, &w.nodes[0]).balance, 5);
}

/// `verinfer models publish` registers a model file under the publisher's
/// key (id, architecture and context read from the file) and pays the
/// publish fee; a bad listing and a second registration are refused with
/// the reason and exit 1.
#[test]
fn models_publish_registers_a_file_under_the_publishers_key() {
    use verinfer_inference::testing::{tiny_model, TinySpec};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("ledger");
    let d = d.to_str().unwrap();
    let w = World::new();
    let treasury = key_file(tmp.path(), "treasury.key", &w.treasury);
    let publisher = key_file(tmp.path(), "publisher.key", &w.users[0]);
    let spec = TinySpec {
        ctx: 96,
        ..TinySpec::default()
    };
    let model = tmp.path().join("tiny.gguf");
    std::fs::write(&model, tiny_model(&spec)).unwrap();
    let model = model.to_str().unwrap();
    ok(&[
        "ledger",
        "init",
        "--dir",
        d,
        "--treasury-key",
        &treasury,
        "--supply",
        &(1_000_000 * TOKEN).to_string(),
    ]);
    ok(&[
        "ledger",
        "transfer",
        "--dir",
        d,
        "--key",
        &treasury,
        "--to",
        &w.users[0].public().to_hex(),
        "--amount",
        &(100 * TOKEN).to_string(),
    ]);
    let publish = |share: &str| {
        run(&[
            "models",
            "publish",
            model,
            "--name",
            "tiny",
            "--price-in-per-1k",
            "2000",
            "--price-out-per-1k",
            "5000",
            "--share-bps",
            share,
            "--licence",
            "Apache-2.0",
            "--key",
            &publisher,
            "--dir",
            d,
        ])
    };
    let bad = publish("10001");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("share_bps"));
    let out = publish("2500");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = verinfer_inference::models::file_sha256(Path::new(model)).unwrap();
    assert_eq!(printed["model_id"], id);
    let ledger = verinfer_ledger::Ledger::open(Path::new(d)).unwrap();
    ledger.with_state(|s| {
        let entry = s.models.values().find(|m| m.name == "tiny").unwrap();
        let p = entry.publisher.as_ref().unwrap();
        assert_eq!(entry.id.to_hex(), id);
        assert_eq!((entry.price_in.0, entry.per_tokens), (2000, 1000));
        assert_eq!(
            (p.account, p.share_bps, p.context, p.architecture.as_str()),
            (w.users[0].public(), 2500, 96, "llama")
        );
        let cost = s.params.tx_fee.0 + s.params.publish_fee.0;
        assert_eq!(s.balance(&w.users[0].public()), 100 * TOKEN - cost);
    });
    drop(ledger);
    let again = publish("2500");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already registered"));
}
