//! `verinfer verify --rpc --contract`: a receipt of a devnet that settles on
//! anvil is checked against the root the contract settled (exit 0, with the
//! settled size); a contract address that is not the settlement contract is
//! a check that could not be made (exit 2).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use verinfer_ledger::evm::chain::Chain;
use verinfer_node::devnet::{self, DevnetOptions, Settlement};
use verinfer_node::testing::chat;

fn verinfer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(args)
        .env("VERINFER_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn receipts_verify_against_the_root_settled_on_chain() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DevnetOptions::new(dir.path().to_path_buf());
    opts.listen = "127.0.0.1:0".into();
    opts.heartbeat = Duration::from_millis(500);
    opts.settlement = Settlement::Anvil;
    let net = rt.block_on(devnet::run(opts)).unwrap();
    let c = net.chain.as_ref().unwrap();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = rt
            .block_on(chat(
                &http,
                &net.url,
                &net.api_key,
                &format!("Count to {i}."),
                6,
                false,
            ))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        ids.push(r.receipt().unwrap().to_string());
    }
    // Wait until the chain settled all three.
    let chain = rt
        .block_on(Chain::reader(&c.url, c.deployment.contract))
        .unwrap();
    let t = Instant::now();
    while rt.block_on(chain.checkpoint()).unwrap().0 < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "not settled on chain"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let contract = c.deployment.contract.to_string();
    for id in &ids {
        let out = verinfer(&[
            "verify",
            "--url",
            &net.url,
            "--api-key",
            &net.api_key,
            id,
            "--rpc",
            &c.url,
            "--contract",
            &contract,
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains("settled on chain: included in the root"),
            "{stdout}"
        );
    }
    // The token is no settlement contract: the check cannot be made.
    let token = c.deployment.token.to_string();
    let out = verinfer(&[
        "verify",
        "--url",
        &net.url,
        "--api-key",
        &net.api_key,
        &ids[0],
        "--rpc",
        &c.url,
        "--contract",
        &token,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    net.stop();
}
