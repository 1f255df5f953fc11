//! Roles serve only whom they should: an outsider with a fresh key (or with
//! a gateway of its own, registered with a stake) gets no free compute from
//! inference nodes and verifiers, cannot send the ledger's duties, cannot
//! grow the commitments log, cannot reuse a message meant for another node,
//! and cannot replay a message after the receiver restarts.

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use verinfer_node::devnet::{self, Devnet, DevnetOptions};
use verinfer_node::testing::{get_json, register_gateway, signed_post};
use verinfer_node::wire::{NodeView, ParamsView};
use verinfer_types::records::{Decoding, Input, Message, Nonce, Policy, Request, RequestTag};
use verinfer_types::{PublicKey, SecretKey, SignedRecord};

/// A small devnet (one inference node, one verifier) on free ports.
async fn small_devnet(dir: &Path) -> Devnet {
    let mut o = DevnetOptions::new(dir.to_path_buf());
    o.listen = "127.0.0.1:0".into();
    o.heartbeat = Duration::from_millis(500);
    o.inference = 1;
    o.verifiers = 1;
    o.quorum = 1;
    o.verifier_workers = 1;
    devnet::run(o).await.expect("devnet")
}

/// What anyone reads from the ledger: its URL, the registered nodes, the model.
struct Public {
    ledger: String,
    nodes: Vec<NodeView>,
    params: ParamsView,
}

impl Public {
    async fn read(http: &reqwest::Client, net: &Devnet) -> Public {
        let ledger = net.role("ledger").expect("ledger").url.clone();
        Public {
            nodes: get_json(http, &format!("{ledger}/ledger/nodes"))
                .await
                .expect("nodes"),
            params: get_json(http, &format!("{ledger}/ledger/params"))
                .await
                .expect("params"),
            ledger,
        }
    }

    fn node(&self, role: &str) -> (PublicKey, String) {
        let n = self
            .nodes
            .iter()
            .find(|n| serde_json::to_value(n.role).ok() == Some(json!(role)))
            .unwrap_or_else(|| panic!("a registered {role}"));
        (n.key, n.endpoint.clone())
    }

    async fn ledger_key(&self, http: &reqwest::Client) -> PublicKey {
        let info: verinfer_node::wire::NodeInfo =
            get_json(http, &format!("{}/node/info", self.ledger))
                .await
                .expect("info");
        info.key
    }

    /// A request for the network's model, signed by `requester` (never reserved).
    fn request(&self, requester: &SecretKey) -> Request {
        let mut r = Request {
            tag: RequestTag,
            model: self.params.models[0].id,
            input: Input::Messages(vec![Message {
                role: "user".into(),
                content: "Write a long story about the sea.".into(),
            }]),
            decoding: Decoding {
                max_tokens: 64,
                ..Decoding::default()
            },
            policy: Policy::default(),
            requester: requester.public(),
            nonce: Nonce(rand::random()),
            signer: requester.public(),
            signature: Default::default(),
        };
        r.sign(requester).expect("sign");
        r
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_gets_no_inference_or_checks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let outsider = SecretKey::generate();
    let request = p.request(&outsider);
    let body = serde_json::to_vec(&request).expect("json");
    let (key, url) = p.node("inference");
    let (status, text) = signed_post(&http, &outsider, &key, &url, "/inference/respond", body)
        .await
        .expect("post");
    assert_eq!(status, 403, "free inference for a stranger: {text}");
    assert!(text.contains("registered gateways"), "{text}");
    let (key, url) = p.node("verifier");
    let check = json!({"request": request, "result": {}});
    let (status, text) = signed_post(
        &http,
        &outsider,
        &key,
        &url,
        "/verifier/check",
        serde_json::to_vec(&check).expect("json"),
    )
    .await
    .expect("post");
    assert_eq!(status, 403, "free checks for a stranger: {text}");
    // Nor warm-ups of its prompts.
    let body = serde_json::to_vec(&request).expect("json");
    let (status, text) = signed_post(&http, &outsider, &key, &url, "/verifier/warm", body)
        .await
        .expect("post");
    assert_eq!(status, 403, "free warm-ups for a stranger: {text}");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_warms_only_signed_requests_for_the_verifiers_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let gateway = SecretKey::generate();
    register_gateway(&net, dir.path(), &gateway, "http://127.0.0.1:9")
        .await
        .expect("register");
    let (key, url) = p.node("verifier");
    let warm = |r: &Request| serde_json::to_vec(r).expect("json");
    // A prompt in someone else's scope, not signed by them: refused.
    let mut forged = p.request(&SecretKey::generate());
    forged.requester = SecretKey::generate().public();
    let (status, text) = signed_post(&http, &gateway, &key, &url, "/verifier/warm", warm(&forged))
        .await
        .expect("post");
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("signature"), "{text}");
    // Another model: refused.
    let mut other = p.request(&gateway);
    other.model = verinfer_types::Hash([7; 32]);
    other.sign(&gateway).expect("sign");
    let (status, _) = signed_post(&http, &gateway, &key, &url, "/verifier/warm", warm(&other))
        .await
        .expect("post");
    assert_eq!(status, 404);
    // A signed request for its model: taken (202) or skipped (204), never queued.
    let (status, text) = signed_post(
        &http,
        &gateway,
        &key,
        &url,
        "/verifier/warm",
        warm(&p.request(&gateway)),
    )
    .await
    .expect("post");
    assert!(status == 202 || status == 204, "{status}: {text}");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_gateway_gets_no_unpaid_inference() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let attacker = SecretKey::generate();
    register_gateway(&net, dir.path(), &attacker, "http://127.0.0.1:9")
        .await
        .expect("register");
    let body = serde_json::to_vec(&p.request(&attacker)).expect("json");
    let (key, url) = p.node("inference");
    let (status, text) = signed_post(&http, &attacker, &key, &url, "/inference/respond", body)
        .await
        .expect("post");
    assert_eq!(status, 403, "inference without a reservation: {text}");
    assert!(text.contains("no live reservation"), "{text}");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_ledger_sends_the_ledgers_duties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let outsider = SecretKey::generate();
    let (key, url) = p.node("verifier");
    for path in [
        "/witness/add-checkpoint",
        "/verifier/evm/settlement",
        "/verifier/evm/slash",
    ] {
        let (status, text) =
            signed_post(&http, &outsider, &key, &url, path, b"old 0\n\nx".to_vec())
                .await
                .expect("post");
        assert_eq!(status, 403, "{path} from a stranger: {text}");
    }
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_grow_the_commitments_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let outsider = SecretKey::generate();
    let ledger_key = p.ledger_key(&http).await;
    let body = serde_json::to_vec(&json!({"result": "00".repeat(32)})).expect("json");
    for path in ["/ledger/commit", "/ledger/report"] {
        let (status, text) =
            signed_post(&http, &outsider, &ledger_key, &p.ledger, path, body.clone())
                .await
                .expect("post");
        assert_eq!(status, 403, "{path} from a stranger: {text}");
    }
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_one_node_is_refused_at_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    // A gateway's message to the verifier, taken to the inference node by
    // whoever saw it (here the gateway's own key signs it, so that only the
    // receiver can make the difference).
    let gateway = SecretKey::generate();
    register_gateway(&net, dir.path(), &gateway, "http://127.0.0.1:9")
        .await
        .expect("register");
    let (verifier, _) = p.node("verifier");
    let (_, inference) = p.node("inference");
    let body = serde_json::to_vec(&p.request(&gateway)).expect("json");
    let (status, text) = signed_post(
        &http,
        &gateway,
        &verifier,
        &inference,
        "/inference/respond",
        body,
    )
    .await
    .expect("post");
    assert_eq!(status, 401, "a message for another node: {text}");
    assert!(text.contains("addressed to node"), "{text}");
    net.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_right_after_a_restart_is_refused() {
    use std::sync::Arc;
    use verinfer_ledger::testing::{World, TOKEN};
    use verinfer_ledger::tx::{Role, TxBody};
    use verinfer_ledger::Ledger;
    use verinfer_types::records::Amount;

    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_dir = dir.path().join("ledger");
    let mut w = World::new();
    let gateway = w.users[0].clone();
    let ledger = Arc::new(
        Ledger::init(
            &ledger_dir,
            &w.genesis(),
            "replay.test/log",
            &SecretKey::generate(),
        )
        .expect("ledger"),
    );
    let mut txs = w.setup();
    txs.push(w.tx(
        &gateway,
        TxBody::Stake {
            amount: Amount(1_500 * TOKEN),
        },
    ));
    txs.push(w.tx(
        &gateway,
        TxBody::Register {
            role: Role::Gateway,
            endpoint: "http://127.0.0.1:9".into(),
        },
    ));
    for tx in txs {
        ledger.submit(&tx).expect("setup");
    }
    let ledger_key = SecretKey::generate();
    let start = || {
        verinfer_node::start::ledger(
            ledger.clone(),
            ledger_dir.clone(),
            ledger_key.clone(),
            "127.0.0.1:0",
            0,
            Duration::from_millis(500),
            Vec::new(),
            60_000,
        )
    };
    let http = reqwest::Client::new();
    let path = "/ledger/commit";
    // The gateway's signed commitment to a Result, as it sends it.
    let commit = verinfer_ledger::tx::Transaction::signed(
        &gateway,
        0,
        TxBody::Commit {
            result: verinfer_types::Hash([0x11; 32]),
        },
    )
    .expect("sign");
    let body = serde_json::to_vec(&verinfer_node::wire::Commit { tx: commit }).expect("json");
    // One message the gateway sent, recorded by whoever was on the path.
    let headers = verinfer_node::auth::sign(&gateway, &ledger_key.public(), "POST", path, &body);
    let send = |url: String| {
        let (http, headers, body) = (http.clone(), headers.clone(), body.clone());
        async move {
            let r = http
                .post(format!("{url}{path}"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("post");
            (r.status().as_u16(), r.text().await.expect("text"))
        }
    };
    let first = start().await.expect("ledger role");
    assert_eq!(send(first.url.clone()).await.0, 200);
    assert_eq!(send(first.url.clone()).await.0, 401, "replay refused");
    first.shutdown().await;
    // The role owns its directory until its last handle is gone.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let restarted = loop {
        match start().await {
            Ok(r) => break r,
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(e.to_string().contains("in use"), "{e:#}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("ledger role again: {e:#}"),
        }
    };
    let (status, text) = send(restarted.url.clone()).await;
    assert_eq!(status, 401, "replay after a restart: {text}");
    assert!(text.contains("replayed"), "{text}");
    restarted.stop();
}

/// Provisional answers hold users' text: the ledger lists them to
/// registered verifiers only (they watch them), never to an unsigned read,
/// a fresh key or a registered gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsider_cannot_list_provisional_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let p = Public::read(&http, &net).await;
    let ledger_key = p.ledger_key(&http).await;
    let path = "/ledger/provisional?after=0";
    let url = format!("{}{path}", p.ledger);
    let read = |key: Option<&SecretKey>| {
        let mut get = http.get(&url);
        if let Some(k) = key {
            get = get.headers(verinfer_node::auth::sign(k, &ledger_key, "GET", path, b""));
        }
        async move {
            let r = get.send().await.expect("read");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(read(None).await.0, 401, "an unsigned read");
    let outsider = SecretKey::generate();
    let (status, text) = read(Some(&outsider)).await;
    assert_eq!(status, 403, "a fresh key lists users' answers: {text}");
    let gateway = SecretKey::generate();
    register_gateway(&net, dir.path(), &gateway, "http://127.0.0.1:9")
        .await
        .expect("register");
    let (status, text) = read(Some(&gateway)).await;
    assert_eq!(status, 403, "a gateway lists others' answers: {text}");
    let verifier = verinfer_node::config::load_key(&dir.path().join("verifier-0").join("node.key"))
        .expect("the verifier's key");
    let (status, text) = read(Some(&verifier)).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with('['), "{text}");
    net.stop();
}
