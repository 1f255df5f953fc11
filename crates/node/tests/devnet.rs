//! End-to-end: the devnet in this process on free ports, driven through the
//! API by a real HTTP client. Guards the whole flow of docs/design.md (reserve,
//! infer, verify, settle, receipt, cosigned checkpoint), the API's error
//! statuses, cheaters being caught and slashed, concurrency with
//! conservation of supply, and restarts keeping history.

use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use verinfer_inference::respond::Fault;
use verinfer_node::config::{create_key, ApiKeyEntry, ApiKeysFile};
use verinfer_node::devnet::{self, Devnet, DevnetOptions};
use verinfer_node::testing::{bundle, chat, get_json, pinned_trust, post, Reply};
use verinfer_types::records::Receipt;
use verinfer_types::Record;
use verinfer_verify::receipt::{check_receipt, ReceiptBundle, Status, Trust};

const WAIT: Duration = Duration::from_secs(30);
/// The devnet's defaults: 3 verifiers, 2 cosignatures make a checkpoint final.
const VERIFIERS: usize = 3;
const WITNESS_QUORUM: usize = 2;

fn options(dir: &Path) -> DevnetOptions {
    let mut o = DevnetOptions::new(dir.to_path_buf());
    o.listen = "127.0.0.1:0".into();
    o.heartbeat = Duration::from_millis(500);
    o
}

/// The keys the devnet in `dir` published at start (see `pinned_trust`).
fn trust(net: &Devnet, dir: &Path) -> Trust {
    let t = pinned_trust(
        net.ledger.receipts().verifier_key().clone(),
        dir,
        VERIFIERS,
        WITNESS_QUORUM,
    )
    .expect("the devnet's keys");
    assert_eq!(t.witnesses.len(), VERIFIERS);
    t
}

async fn verified(http: &reqwest::Client, net: &Devnet, trust: &Trust, r: &Reply) -> ReceiptBundle {
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.verification(), "verified", "{:?}", r.verinfer);
    let id = r.receipt().expect("receipt id");
    let b = bundle(http, &net.url, &net.api_key, &id, WAIT)
        .await
        .expect("receipt");
    let report = check_receipt(&b, trust).expect("receipt verifies against the pinned keys");
    assert_eq!(report.status, Status::Verified);
    b
}

/// A poor account's API key, added before the devnet starts.
fn add_poor_key(dir: &Path) -> String {
    let gw = dir.join("gateway");
    create_key(&gw.join("poor.key")).expect("key");
    let path = gw.join("api-keys.toml");
    let mut f: ApiKeysFile =
        toml::from_str(&std::fs::read_to_string(&path).expect("keys")).expect("toml");
    f.keys.push(ApiKeyEntry::new("vi-poor", "poor.key"));
    std::fs::write(&path, toml::to_string(&f).expect("toml")).expect("write");
    "vi-poor".into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devnet_answers_are_verified_settled_and_provable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = options(dir.path());
    let path = devnet::model_path(None).expect("model");
    devnet::prepare(&opts, &path).expect("prepare");
    let poor = add_poor_key(dir.path());
    let net = devnet::run(opts.clone()).await.expect("devnet");
    let http = reqwest::Client::new();
    let trust = trust(&net, dir.path());

    // Non-streamed and streamed answers: verified, settled, provable.
    let plain = chat(&http, &net.url, &net.api_key, "What is 2+2?", 12, false)
        .await
        .expect("chat");
    assert_eq!(
        plain.header_receipt.as_deref(),
        plain.receipt().map(|h| h.to_hex()).as_deref()
    );
    let b = verified(&http, &net, &trust, &plain).await;
    let streamed = chat(&http, &net.url, &net.api_key, "What is 2+2?", 12, true)
        .await
        .expect("chat");
    assert_eq!(
        streamed.text, plain.text,
        "greedy answers are deterministic"
    );
    verified(&http, &net, &trust, &streamed).await;

    // One byte changed anywhere the receipt commits to fails the check.
    let mut tampered = b.clone();
    let r: &mut Receipt = tampered.receipt.as_mut().expect("owner sees the text");
    r.result.output_text.push('!');
    assert!(check_receipt(&tampered, &trust).is_err());
    let text = serde_json::to_string(&b).expect("json");
    let flipped = text.replacen(
        &b.leaf.fees.total.to_string(),
        &(b.leaf.fees.total.0 + 1).to_string(),
        1,
    );
    let parsed: ReceiptBundle = serde_json::from_str(&flipped).expect("json");
    assert!(check_receipt(&parsed, &trust).is_err());

    // Another key sees the leaf and the proof, not the text.
    let public: ReceiptBundle = get_json(&http, &format!("{}/v1/receipts/{}", net.url, b.id))
        .await
        .expect("public receipt");
    assert!(public.receipt.is_none());
    assert_eq!(
        check_receipt(&public, &trust)
            .expect("leaf-only check")
            .status,
        Status::LeafOnly
    );

    // Errors in OpenAI's format with the right status, naming the field.
    let body = json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4});
    let with = |field: &str, value: serde_json::Value| {
        let mut b = body.clone();
        *b.pointer_mut(field).expect("field") = value;
        b
    };
    let cases = [
        ("vi-wrong", body.clone(), 401, json!(null)),
        (poor.as_str(), body.clone(), 402, json!(null)),
        (
            &net.api_key,
            with("/max_tokens", json!("many")),
            400,
            json!("max_tokens"),
        ),
        (
            &net.api_key,
            with("/model", json!("gpt-9")),
            404,
            json!("model"),
        ),
        (
            &net.api_key,
            with("/messages/0/content", json!("lorem ipsum ".repeat(6000))),
            413,
            json!("messages"),
        ),
        (
            &net.api_key,
            with("/messages/0/content", json!("x".repeat(2 << 20))),
            413,
            json!(null),
        ),
    ];
    for (key, b, status, param) in cases {
        let r = post(&http, &net.url, key, b).await.expect("post");
        let err: serde_json::Value = serde_json::from_str(&r.text).expect("OpenAI error body");
        assert_eq!(
            (r.status, &err["error"]["param"]),
            (status, &param),
            "{}",
            r.text
        );
        assert!(err["error"]["message"].is_string());
    }

    // 50 concurrent chats: each one a receipt in the log; supply conserved.
    let before = net.ledger.receipts().size();
    let http = Arc::new(http);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (http, url, key) = (http.clone(), net.url.clone(), net.api_key.clone());
            tokio::spawn(async move {
                chat(&http, &url, &key, &format!("Count to {i}."), 4, i % 2 == 0).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.expect("task").expect("chat");
        assert_eq!(
            (r.status, r.verification()),
            (200, "verified"),
            "{}",
            r.text
        );
        ids.push(r.receipt().expect("receipt"));
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    // Honest nodes answering in batches are never rejected.
    let c = net.gateway().expect("gateway").counters();
    assert_eq!((c.rejected, c.slashes), (0, 0), "{c:?}");
    for id in &ids {
        assert!(
            net.ledger.receipt_index(id).is_some(),
            "receipt {id} is in the log"
        );
    }
    assert!(net.ledger.receipts().size() >= before + 50);
    let summary = net.ledger.with_state(|s| s.summary());
    assert_eq!(summary.escrow, 0, "every reservation settled or released");
    // The explorer lists them, latest first, and finds one by id.
    let page: serde_json::Value =
        get(&http, &format!("{}/v1/explorer/records?limit=10", net.url)).await;
    let size = net.ledger.receipts().size();
    assert_eq!(page["size"], json!(size));
    assert_eq!(page["records"][0]["index"], json!(size - 1));
    assert_eq!(page["records"].as_array().map(Vec::len), Some(10));
    let found: serde_json::Value = get(
        &http,
        &format!("{}/v1/explorer/records?q={}", net.url, ids[7]),
    )
    .await;
    assert_eq!(found["records"][0]["id"], json!(ids[7]));
    let charted = charted_verified(&http, &net.url).await;
    assert_eq!(charted, size, "every settled answer is in the calls chart");
    net.ledger
        .with_state(|s| s.check_invariants())
        .expect("supply conserved");

    // The rate limit: a burst of requests beyond it gets 429.
    let mut limited = false;
    for _ in 0..150 {
        let r = post(&http, &net.url, &net.api_key, json!({"model": 1}))
            .await
            .expect("post");
        if r.status == 429 {
            limited = true;
            break;
        }
        assert_eq!(r.status, 400);
    }
    assert!(limited, "the per-key rate limit holds");

    // A restart on the same directory keeps the history.
    let size = net.ledger.receipts().size();
    net.stop();
    drop(net);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let net = devnet::run(opts).await.expect("restart");
    assert_eq!(net.ledger.receipts().size(), size);
    let charted = charted_verified(&http, &net.url).await;
    assert_eq!(charted, size, "the calls chart survives the restart");
    let again = bundle(&http, &net.url, &net.api_key, &b.id, WAIT)
        .await
        .expect("old receipt");
    assert_eq!(
        again.receipt.as_ref().map(|r| r.hash().ok()),
        b.receipt.as_ref().map(|r| r.hash().ok())
    );
    let fresh = chat(&http, &net.url, &net.api_key, "And now?", 4, false)
        .await
        .expect("chat");
    // Still the keys pinned at the first start.
    verified(&http, &net, &trust, &fresh).await;

    // No healthy inference node: 503.
    for name in ["inference-0", "inference-1"] {
        net.role(name).expect("role").shutdown().await;
    }
    let r = chat(&http, &net.url, &net.api_key, "anyone?", 4, false)
        .await
        .expect("chat");
    assert_eq!(r.status, 503, "{}", r.text);
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cheating_node_is_rejected_slashed_and_bypassed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(dir.path());
    opts.faulty_inference = 1;
    opts.fault = Fault::EditToken(1);
    let net = devnet::run(opts).await.expect("devnet");
    let http = reqwest::Client::new();
    let trust = trust(&net, dir.path());
    let cheater = devnet_key(dir.path(), "inference-0");
    let demo = devnet_key(dir.path(), "gateway/demo");
    let balance = net.ledger.with_state(|s| s.balance(&demo));

    let mut fees = 0u128;
    for i in 0..6 {
        let r = chat(
            &http,
            &net.url,
            &net.api_key,
            &format!("Tell me a fact about the number {i}."),
            8,
            i % 2 == 1,
        )
        .await
        .expect("chat");
        let b = verified(&http, &net, &trust, &r).await;
        assert_ne!(b.leaf.node, cheater, "answers come from the honest node");
        fees += b.leaf.fees.total.0;
    }
    let c = net.gateway().expect("gateway").counters();
    assert!(
        c.rejected >= 1,
        "the cheater was given requests and caught: {c:?}"
    );
    assert_eq!(c.slashes, c.rejected, "every caught cheat is slashed");
    let slashed = net
        .ledger
        .with_state(|s| s.slashed.iter().filter(|(_, who)| *who == cheater).count());
    assert_eq!(slashed as u64, c.rejected);
    // The requester paid only for the verified answers.
    let after = net.ledger.with_state(|s| s.balance(&demo));
    assert_eq!(balance - after, fees);
    // The explorer shows the slashes with their evidence; the calls chart
    // counts each call once (all were served verified after their retries)
    // and the rejections apart, per node (reported by the gateway in the
    // background).
    let settlement: serde_json::Value =
        get(&http, &format!("{}/v1/explorer/settlement", net.url)).await;
    let slashes = settlement["slashes"].as_array().expect("slashes");
    assert_eq!(slashes.len() as u64, c.rejected);
    assert!(slashes.iter().all(|s| s["accused"] == json!(cheater)
        && s["kind"] == "node"
        && s["committee"].as_array().is_some_and(|c| c.len() == 3)));
    let network = charted_once(&http, &net.url, |n| {
        chart_sum(n, "node_rejections") == c.rejected
    })
    .await;
    assert_eq!(chart_sum(&network, "node_rejections"), c.rejected);
    assert_eq!(
        chart_sum(&network, "rejected"),
        0,
        "no call was answered rejected"
    );
    assert_eq!(
        chart_sum(&network, "verified"),
        6,
        "six calls, six verified"
    );
    net.ledger
        .with_state(|s| s.check_invariants())
        .expect("supply conserved");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_rejected_on_two_nodes_is_one_rejected_call_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options(dir.path());
    opts.faulty_inference = 2;
    opts.fault = Fault::EditToken(1);
    let net = devnet::run(opts.clone()).await.expect("devnet");
    let http = reqwest::Client::new();
    let r = chat(&http, &net.url, &net.api_key, "Name a colour.", 6, false)
        .await
        .expect("chat");
    assert_eq!(r.verification(), "rejected", "{}", r.text);
    let cheaters = [
        devnet_key(dir.path(), "inference-0"),
        devnet_key(dir.path(), "inference-1"),
    ];
    let counts = |n: &serde_json::Value| {
        (
            chart_sum(n, "rejected"),
            chart_sum(n, "node_rejections"),
            chart_sum(n, "verified") + chart_sum(n, "provisional"),
            cheaters.map(|k| node_field(n, &k, "rejections_1h")),
        )
    };
    // One API call, rejected on both nodes in turn: one rejected call, a
    // rejection on each node.
    let want = (1, 2, 0, [1, 1]);
    let network = charted_once(&http, &net.url, |n| counts(n) == want).await;
    assert_eq!(counts(&network), want);
    // The report was durable before the ledger took it: a restart keeps it.
    net.stop();
    drop(net);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let net = devnet::run(opts).await.expect("restart");
    let network = get(&http, &format!("{}/v1/explorer/network", net.url)).await;
    assert_eq!(counts(&network), want);
    net.stop();
}

fn devnet_key(dir: &Path, name: &str) -> verinfer_types::PublicKey {
    let path = if name.contains('/') {
        dir.join(format!("{name}.key"))
    } else {
        dir.join(name).join("node.key")
    };
    verinfer_node::config::load_key(&path)
        .expect("key")
        .public()
}

async fn get(http: &reqwest::Client, url: &str) -> serde_json::Value {
    get_json(http, url).await.expect("json")
}

/// Sum of `field` over the per-minute chart of `network`.
fn chart_sum(network: &serde_json::Value, field: &str) -> u64 {
    network["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .map(|m| m[field].as_u64().unwrap_or(0))
        .sum()
}

/// `field` of node `key` in `network`.
fn node_field(network: &serde_json::Value, key: &verinfer_types::PublicKey, field: &str) -> u64 {
    network["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["key"] == json!(key))
        .and_then(|n| n[field].as_u64())
        .unwrap_or(0)
}

/// `/v1/explorer/network` once `done` holds of it (reports arrive in the
/// background), or after 10 s.
async fn charted_once(
    http: &reqwest::Client,
    url: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut network = serde_json::Value::Null;
    for _ in 0..100 {
        network = get(http, &format!("{url}/v1/explorer/network")).await;
        if done(&network) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    network
}

/// The verified calls in the explorer's per-minute chart.
async fn charted_verified(http: &reqwest::Client, url: &str) -> u64 {
    let network = get(http, &format!("{url}/v1/explorer/network")).await;
    network["minutes"]
        .as_array()
        .expect("minutes")
        .iter()
        .map(|m| m["verified"].as_u64().unwrap_or(0))
        .sum()
}
