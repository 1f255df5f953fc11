//! A crash under load: `verinfer devnet` SIGKILLed while 16 clients send
//! chats, then restarted on the same directory and port. The reservations of
//! the requests the crash cut off are released once their deadline passes
//! (the ledger role sweeps expired reservations at start and then every
//! [`SWEEP_INTERVAL`]), so escrow goes back to 0; every receipt acknowledged
//! before the crash is in the log and verifies against the pinned keys; the
//! supply is conserved throughout.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{
    bin, chat_outcome, devnet_trust, free_port, init_devnet_with_ttl, spawn_ready, summary,
    wait_escrow_zero, wait_ready, Outcome, Proc,
};
use verinfer_node::start::SWEEP_INTERVAL;
use verinfer_node::testing::bundle;
use verinfer_verify::receipt::{check_receipt, Status};

/// Reservations last this long: long enough for a chat under this load,
/// short enough to wait out in a test.
const TTL_SECS: u64 = 60;
const CLIENTS: usize = 16;
/// Answers acknowledged before the kill.
const BEFORE_KILL: usize = 12;

fn devnet(d: &std::path::Path, port: u16) -> (Proc, String) {
    let mut cmd = bin();
    cmd.args(["devnet", "--data-dir"])
        .arg(d)
        .args(["--listen", &format!("127.0.0.1:{port}")]);
    spawn_ready(cmd, "devnet")
}

#[test]
fn a_devnet_killed_under_load_releases_its_escrow_and_keeps_every_acknowledged_receipt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (api_key, _) = init_devnet_with_ttl(d, TTL_SECS);
    let trust = devnet_trust(d);
    let port = free_port();
    let (mut net, url) = devnet(d, port);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let acked = rt.block_on(async {
        let http = reqwest::Client::new();
        wait_ready(&http, &url, 2, 3).await;
        let stop = Arc::new(AtomicBool::new(false));
        let n_acked = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (http, url, key) = (http.clone(), url.clone(), api_key.clone());
                let (stop, n_acked) = (stop.clone(), n_acked.clone());
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let prompt = format!("Client {c} asks for a word, number {i}.");
                        match chat_outcome(&http, &url, &key, &prompt, 8).await {
                            Outcome::Acked(id) => {
                                n_acked.fetch_add(1, Ordering::SeqCst);
                                acked.push(id);
                            }
                            // Before the kill, only a busy network may refuse.
                            Outcome::Refused(status, retry, body) => assert!(
                                stop.load(Ordering::SeqCst)
                                    || (matches!(status, 429 | 503) && retry.is_some()),
                                "{status} {retry:?}: {body}"
                            ),
                            // Delivered; settled once verifiers can be had.
                            Outcome::Pending => {}
                            Outcome::Unreachable(_) => break,
                        }
                        i += 1;
                    }
                    acked
                })
            })
            .collect();
        let t = Instant::now();
        while n_acked.load(Ordering::SeqCst) < BEFORE_KILL {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "only {} answers in 300 s",
                n_acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The requests in flight now have their fees in escrow.
        let before = summary(&http, &url).await;
        stop.store(true, Ordering::SeqCst);
        net.child.kill().expect("SIGKILL");
        net.child.wait().expect("wait");
        eprintln!("killed with {} in escrow", before.escrow);
        let mut acked = Vec::new();
        for c in clients {
            acked.extend(c.await.expect("client"));
        }
        acked
    });
    assert!(acked.len() >= BEFORE_KILL, "{} acknowledged", acked.len());

    let (_net, url) = devnet(d, port);
    rt.block_on(async {
        let http = reqwest::Client::new();
        let s = summary(&http, &url).await;
        assert!(s.conserved(), "supply conserved after the crash: {s:?}");
        eprintln!("restarted with {} in escrow", s.escrow);
        // Every reservation cut off by the crash ends by its deadline; the
        // next sweep after it releases it.
        let took = wait_escrow_zero(&http, &url, TTL_SECS + SWEEP_INTERVAL.as_secs() + 15).await;
        eprintln!("escrow back to 0 {took:?} after the restart");
        wait_ready(&http, &url, 2, 3).await;
        for id in &acked {
            let b = bundle(&http, &url, &api_key, id, Duration::from_secs(60))
                .await
                .expect("an acknowledged receipt is served after the restart");
            let report = check_receipt(&b, &trust).expect("the receipt verifies");
            assert_eq!(report.status, Status::Verified);
        }
        eprintln!("{} acknowledged receipts provable", acked.len());
    });
}
