//! The network as separate processes, one per role (`verinfer node`), under
//! load while one verifier and one inference node are killed: every answer
//! the gateway acknowledged is in the log with a receipt that verifies, and
//! the ledger's supply is conserved. Guards the roles' HTTP protocol across
//! processes, failover (retry on another inference node, replacement
//! verifiers) and durability of acknowledged settlements.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{free_port, init_devnet, member_config, node, wait_ready, write};
use verinfer_node::testing::{bundle, chat, get_json, pinned_trust};
use verinfer_verify::receipt::{check_receipt, Status};

#[test]
fn separate_processes_survive_killed_nodes_and_lose_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (api_key, model) = init_devnet(d);
    // The keys a client pins, read before any node starts: the log key the
    // ledger was created with, the three verifiers' keys, quorum 2 (below).
    let log_key = verinfer_ledger::Ledger::open(&d.join("ledger"))
        .expect("the initialised ledger")
        .receipts()
        .verifier_key()
        .clone();
    let trust = pinned_trust(log_key, d, 3, 2).expect("the devnet's keys");

    let ledger_url = format!("http://127.0.0.1:{}", free_port());
    let ledger_cfg = write(
        d.join("ledger/node.toml"),
        format!(
            "role = \"ledger\"\nkey = \"node.key\"\nlisten = \"{}\"\n\n[ledger]\nwitness_quorum = 2\ncheckpoint_interval_ms = 300\n",
            ledger_url.trim_start_matches("http://")
        ),
    );
    let mut procs = vec![node("ledger", &ledger_cfg).0];
    let member = |name: &str| member_config(d, name, &ledger_url, &model);
    for i in 0..3 {
        procs.push(node("verifier", &member(&format!("verifier-{i}"))).0);
    }
    for i in 0..2 {
        procs.push(node("inference", &member(&format!("inference-{i}"))).0);
    }
    let gw_cfg = write(
        d.join("gateway/node.toml"),
        format!(
            "key = \"node.key\"\nlisten = \"127.0.0.1:0\"\nledger_url = \"{ledger_url}\"\n\n[gateway]\napi_keys = \"api-keys.toml\"\nquorum = 2\nliveness_ms = 3000\n"
        ),
    );
    let (gw, url) = node("gateway", &gw_cfg);
    procs.push(gw);

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let http = Arc::new(reqwest::Client::new());
        // Ready: the gateway sees both inference nodes and all verifiers.
        wait_ready(&http, &url, 2, 3).await;

        // Load from 4 clients; kill a verifier and an inference node once
        // six answers are in.
        const TOTAL: usize = 24;
        let sent = Arc::new(AtomicUsize::new(0));
        let acked = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (http, url, key, sent, acked) = (
                    http.clone(),
                    url.clone(),
                    api_key.clone(),
                    sent.clone(),
                    acked.clone(),
                );
                tokio::spawn(async move {
                    let mut replies = Vec::new();
                    loop {
                        let i = sent.fetch_add(1, Ordering::SeqCst);
                        if i >= TOTAL {
                            break replies;
                        }
                        let r = chat(
                            &http,
                            &url,
                            &key,
                            &format!("Write a short line about the number {i}."),
                            12,
                            (i + w) % 2 == 0,
                        )
                        .await
                        .expect("request");
                        if r.status == 200 {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                        replies.push(r);
                    }
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while acked.load(Ordering::SeqCst) < 6 {
            assert!(
                std::time::Instant::now() < deadline,
                "only {} of 6 answers acknowledged after 120 s",
                acked.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for p in procs
            .iter_mut()
            .filter(|p| p.name.contains("verifier-0") || p.name.contains("inference-0"))
        {
            p.child.kill().expect("kill");
        }
        let mut replies = Vec::new();
        for w in workers {
            replies.extend(w.await.expect("worker"));
        }
        assert_eq!(replies.len(), TOTAL);
        for r in &replies {
            assert_eq!(
                (r.status, r.verification()),
                (200, "verified"),
                "every request is served despite the kills: {}",
                r.text
            );
        }
        // Nothing acknowledged is lost: each receipt is in the log, covered
        // by a cosigned checkpoint, and verifies.
        for r in &replies {
            let id = r.receipt().expect("receipt id");
            let b = bundle(&http, &url, &api_key, &id, Duration::from_secs(30))
                .await
                .expect("receipt");
            let report =
                check_receipt(&b, &trust).expect("receipt verifies against the pinned keys");
            assert_eq!(report.status, Status::Verified);
        }
        let s: verinfer_node::wire::SummaryView =
            get_json(&http, &format!("{url}/v1/ledger/summary"))
                .await
                .expect("summary");
        assert!(s.conserved(), "supply conserved: {s:?}");
        assert_eq!(s.escrow, 0, "no reservation left behind");
    });
}
