//! The gateway under attack: reading others' prompts and answers, taking
//! nodes offline with bad input, text without payment, silent endpoints
//! hiding live nodes, and the API keys at rest.

use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use verinfer_ledger::tx::{Role, TxBody};
use verinfer_node::client::LedgerClient;
use verinfer_node::config::{api_key_hash, load_key};
use verinfer_node::devnet::{self, Devnet, DevnetOptions, TOKEN};
use verinfer_node::testing::{chat, get_json, raw_request, Reply};
use verinfer_types::records::Amount;
use verinfer_types::{PublicKey, SecretKey};
use verinfer_verify::receipt::ReceiptBundle;

/// A small devnet: one inference node, three verifiers, quorum 2.
async fn small_devnet(dir: &Path) -> Devnet {
    let mut o = DevnetOptions::new(dir.to_path_buf());
    o.listen = "127.0.0.1:0".into();
    o.heartbeat = Duration::from_millis(500);
    o.inference = 1;
    o.verifiers = 3;
    devnet::run(o).await.expect("devnet")
}

/// What an attack must leave as it was: every node's stake, the supply,
/// and the receipts settled so far.
struct Untouched {
    stakes: Vec<(PublicKey, u128)>,
    supply: u128,
    receipts: Vec<verinfer_types::Hash>,
}

impl Untouched {
    fn now(net: &Devnet, receipts: &[&Reply]) -> Self {
        let (stakes, supply) = net.ledger.with_state(|s| {
            (
                s.nodes.keys().map(|k| (*k, s.stake(k))).collect(),
                s.summary().total_supply,
            )
        });
        Untouched {
            stakes,
            supply,
            receipts: receipts
                .iter()
                .map(|r| r.receipt().expect("receipt"))
                .collect(),
        }
    }

    fn check(&self, net: &Devnet) {
        net.ledger.with_state(|s| {
            for (k, stake) in &self.stakes {
                assert_eq!(s.stake(k), *stake, "stake of {k}");
            }
            assert_eq!(s.summary().total_supply, self.supply);
            s.check_invariants().expect("supply conserved");
            assert_eq!(s.summary().escrow, 0, "no reservation left behind");
        });
        for id in &self.receipts {
            assert!(net.ledger.receipt_index(id).is_some(), "receipt {id}");
        }
    }
}

fn demo_balance(net: &Devnet, dir: &Path) -> u128 {
    let demo = load_key(&dir.join("gateway").join("demo.key")).expect("demo key");
    net.ledger.with_state(|s| s.balance(&demo.public()))
}

async fn verified_chat(http: &reqwest::Client, net: &Devnet, prompt: &str, stream: bool) -> Reply {
    let r = chat(http, &net.url, &net.api_key, prompt, 8, stream)
        .await
        .expect("chat");
    assert_eq!(
        (r.status, r.verification()),
        (200, "verified"),
        "{}",
        r.text
    );
    r
}

/// Attack: the gateway forwarded `/log/...` and `/v1/explorer/...` to the
/// ledger after the URL library resolved `..` and `%2e%2e`, so anyone read
/// `/ledger/receipts/ID` (the prompt and the answer) through it; the ledger
/// role served that text to anyone who reached its port.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn receipt_text_is_private_to_its_requester() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let secret = "Spell the word lighthouse backwards.";
    let r = verified_chat(&http, &net, secret, false).await;
    let id = r.receipt().expect("receipt");
    let untouched = Untouched::now(&net, &[&r]);

    // Through the gateway's proxies, with the exact request lines.
    for target in [
        format!("/log/%2e%2e/ledger/receipts/{id}"),
        format!("/log/%2E%2E/ledger/receipts/{id}"),
        format!("/log/..%2fledger/receipts/{id}"),
        format!("/log/%252e%252e/ledger/receipts/{id}"),
        format!("/log/..%5c..%5cledger/receipts/{id}"),
        format!("/v1/explorer/../receipts/{id}"),
        format!("/v1/explorer/%2e%2e/receipts/{id}"),
        format!("/log/tile/../../ledger/receipts/{id}"),
    ] {
        let (status, body) = raw_request(&net.url, &format!("GET {target} HTTP/1.1"))
            .await
            .expect("request");
        assert_eq!(status, 400, "{target}: {body}");
        assert!(!body.contains("lighthouse"), "{target} leaked: {body}");
        assert!(body.contains("\"param\":\"path\""), "{target}: {body}");
    }
    // The allowed reads still pass.
    let (status, body) = raw_request(&net.url, "GET /v1/explorer/records?limit=1 HTTP/1.1")
        .await
        .expect("request");
    assert_eq!(status, 200, "{body}");

    // The ledger role itself: leaf and proofs to anyone, the text only to a
    // read signed by the requester.
    let ledger = &net.role("ledger").expect("ledger").url;
    let path = format!("/ledger/receipts/{id}");
    let anonymous: ReceiptBundle = get_json(&http, &format!("{ledger}{path}"))
        .await
        .expect("anonymous read");
    assert!(anonymous.receipt.is_none(), "the ledger served the text");
    let ledger_key =
        get_json::<verinfer_node::wire::NodeInfo>(&http, &format!("{ledger}/node/info"))
            .await
            .expect("ledger info")
            .key;
    let read_as = |key: &SecretKey| {
        http.get(format!("{ledger}{path}"))
            .headers(verinfer_node::auth::sign(
                key,
                &ledger_key,
                "GET",
                &path,
                b"",
            ))
            .send()
    };
    let other: ReceiptBundle = read_as(&SecretKey::generate())
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert!(other.receipt.is_none(), "another key read the text");
    let demo = load_key(&dir.path().join("gateway").join("demo.key")).expect("demo key");
    let own: ReceiptBundle = read_as(&demo)
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let text = own.receipt.expect("the requester reads its text").request;
    assert!(format!("{:?}", text.input).contains("lighthouse"));
    // A forged envelope is refused, not read anonymously.
    let mut forged = verinfer_node::auth::sign(&demo, &ledger_key, "GET", "/elsewhere", b"");
    forged.remove(verinfer_node::auth::NONCE);
    let r = http
        .get(format!("{ledger}{path}"))
        .headers(forged)
        .send()
        .await
        .expect("read");
    assert_eq!(r.status().as_u16(), 401);

    // The gateway: the API key's holder reads the text, nobody else.
    let mine: ReceiptBundle = http
        .get(format!("{}/v1/receipts/{id}", net.url))
        .bearer_auth(&net.api_key)
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    assert!(mine.receipt.is_some());
    let public: ReceiptBundle = get_json(&http, &format!("{}/v1/receipts/{id}", net.url))
        .await
        .expect("public read");
    assert!(public.receipt.is_none());
    untouched.check(&net);
    net.stop();
}

/// Attack: `"prompt": [4294967295]` made the inference node fail; the
/// gateway counted that as a node failure and marked the node down, so
/// every chat got 503 for 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_before_any_node_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let r = verified_chat(&http, &net, "Say hi.", false).await;
    let untouched = Untouched::now(&net, &[&r]);
    let balance = demo_balance(&net, dir.path());

    let completions = |body: Value| {
        http.post(format!("{}/v1/completions", net.url))
            .bearer_auth(&net.api_key)
            .json(&body)
            .send()
    };
    let cases = [
        (json!({"prompt": [4294967295u64]}), "prompt"),
        (json!({"prompt": [1, 49152]}), "prompt"),
        (json!({"prompt": vec![1u32; 9000]}), "prompt"),
        (json!({"prompt": "hi", "max_tokens": 100000}), "max_tokens"),
        (
            json!({"prompt": "hi", "verification": {"mode": "quorum", "k": 65}}),
            "verification",
        ),
        (
            json!({"prompt": "hi", "verification": {"mode": "unheard_of"}}),
            "verification",
        ),
    ];
    for (mut body, field) in cases {
        body["model"] = json!("smollm2-135m");
        body["max_tokens"] = body.get("max_tokens").cloned().unwrap_or(json!(4));
        let r = completions(body.clone()).await.expect("request");
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let e: Value = r.json().await.expect("error body");
        assert_eq!(e["error"]["param"], json!(field), "{body}: {e}");
    }
    // No node was marked down: the next chats are answered at once.
    for prompt in ["Say hi.", "Say bye."] {
        verified_chat(&http, &net, prompt, false).await;
    }
    let network: Value = get_json(&http, &format!("{}/v1/network", net.url))
        .await
        .expect("network");
    assert_eq!(network["live"], json!({"inference": 1, "verifiers": 3}));
    assert!(
        demo_balance(&net, dir.path()) < balance,
        "the chats were paid"
    );
    untouched.check(&net);
    net.stop();
}

/// Attack: a stream asking for `quorum(64)` received the whole answer, then
/// an error event (not enough verifiers), and the reservation was released:
/// the text was free.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_text_streams_without_payment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let r = verified_chat(&http, &net, "Say hi.", true).await;
    let untouched = Untouched::now(&net, &[&r]);
    let balance = demo_balance(&net, dir.path());
    let size = net.ledger.receipts().size();

    for (k, want) in [(64, 503), (65, 400)] {
        let resp = http
            .post(format!("{}/v1/chat/completions", net.url))
            .bearer_auth(&net.api_key)
            .json(&json!({
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "Write a long story."}],
                "max_tokens": 16,
                "stream": true,
                "verification": {"mode": "quorum", "k": k},
            }))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status().as_u16(), want, "k = {k}");
        let body = resp.text().await.expect("body");
        assert!(!body.contains("data:"), "k = {k}: text streamed: {body}");
    }
    // Nothing was reserved, settled or given away.
    assert_eq!(demo_balance(&net, dir.path()), balance);
    assert_eq!(net.ledger.receipts().size(), size);
    // A stream that is served is paid: exactly its receipt's fees.
    let paid = verified_chat(&http, &net, "Say bye.", true).await;
    let id = paid.receipt().expect("receipt");
    let index = net.ledger.receipt_index(&id).expect("settled");
    let fees = net
        .ledger
        .receipt(index)
        .expect("read")
        .expect("receipt")
        .fees
        .total;
    assert!(fees.0 > 0);
    assert_eq!(demo_balance(&net, dir.path()), balance - fees.0);
    untouched.check(&net);
    net.stop();
}

/// Accepts TCP connections and never answers.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

/// Attack: two registered endpoints that accept connections and never
/// answer held up the gateway's liveness probes (one at a time, 10 s each)
/// until every honest node looked dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_endpoints_never_hide_live_nodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let r = verified_chat(&http, &net, "Say hi.", false).await;
    let untouched = Untouched::now(&net, &[&r]);

    // The attacker stakes two keys (the treasury lends the stake) and
    // registers silent endpoints, as an inference node and as a verifier.
    let ledger_url = net.role("ledger").expect("ledger").url.clone();
    let treasury = load_key(&dir.path().join("treasury.key")).expect("treasury");
    let min = net.ledger.with_state(|s| s.params.min_stake.0);
    for role in [Role::Inference, Role::Verifier] {
        let key = SecretKey::generate();
        let endpoint = silent_endpoint().await;
        let lender = LedgerClient::new(&ledger_url, treasury.clone());
        lender
            .submit_as(
                &treasury,
                TxBody::Transfer {
                    to: key.public(),
                    amount: Amount(min + TOKEN),
                },
            )
            .await
            .expect("transfer");
        let attacker = LedgerClient::new(&ledger_url, key.clone());
        attacker
            .submit_as(
                &key,
                TxBody::Stake {
                    amount: Amount(min),
                },
            )
            .await
            .expect("stake");
        attacker
            .submit_as(&key, TxBody::Register { role, endpoint })
            .await
            .expect("register");
    }
    // Twice the liveness window (10 s): the honest nodes stay live
    // and chats keep being answered throughout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let network: Value = get_json(&http, &format!("{}/v1/network", net.url))
            .await
            .expect("network");
        assert_eq!(
            network["live"],
            json!({"inference": 1, "verifiers": 3}),
            "after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    verified_chat(&http, &net, "Say bye.", true).await;
    untouched.check(&net);
    net.stop();
}

/// Attack: the API keys file held every key in plain text (mode 0644), so
/// anyone who could read the gateway's directory could spend from its
/// accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn api_keys_are_stored_hashed_and_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    let keys = dir.path().join("gateway").join("api-keys.toml");
    let text = std::fs::read_to_string(&keys).expect("keys file");
    assert!(!text.contains(&net.api_key), "a key in plain text: {text}");
    assert!(
        text.contains(&api_key_hash(&net.api_key).to_hex()),
        "{text}"
    );
    for file in [keys, dir.path().join("api-key")] {
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    // The key still works; its hash, or a near miss, does not.
    let r = verified_chat(&http, &net, "Say hi.", false).await;
    for wrong in [
        api_key_hash(&net.api_key).to_hex(),
        format!("{}x", net.api_key),
    ] {
        let r = chat(&http, &net.url, &wrong, "Say hi.", 4, false)
            .await
            .expect("chat");
        assert_eq!(r.status, 401);
    }
    // This client is on the machine: it gets the demo key.
    let devnet: Value = get_json(&http, &format!("{}/v1/devnet", net.url))
        .await
        .expect("devnet info");
    assert_eq!(devnet["api_key"], json!(net.api_key));
    Untouched::now(&net, &[&r]).check(&net);
    net.stop();
}

/// Attack (S12): the verifiers vanish after the text is delivered. The
/// gateway released the reservation when it found no certificate, so the
/// node's delivered text went unpaid. Now the answer is `pending`, kept and
/// certified once verifiers are back: settled once, the node paid, the
/// requester charged once, nothing left in escrow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivered_text_is_paid_once_when_the_verifiers_come_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut net = small_devnet(dir.path()).await;
    let http = reqwest::Client::new();
    verified_chat(&http, &net, "Say hi.", true).await;
    let balance = demo_balance(&net, dir.path());
    let size = net.ledger.receipts().size();

    // Every verifier stops; the gateway still sees them live (their last
    // heartbeats are recent), so the request is admitted and the text
    // streams. Then no verdict can be had.
    for i in 0..3 {
        net.role(&format!("verifier-{i}"))
            .expect("verifier")
            .shutdown()
            .await;
    }
    let r = chat(&http, &net.url, &net.api_key, "Say bye.", 8, true)
        .await
        .expect("chat");
    assert_eq!(
        (r.status, r.verification()),
        (200, "pending"),
        "{:?}",
        r.verinfer
    );
    assert!(!r.text.is_empty(), "the text was delivered");
    assert_eq!(r.receipt(), None);
    let status_url = r.verinfer["status_url"]
        .as_str()
        .expect("status url")
        .to_string();
    net.ledger
        .with_state(|s| assert!(s.summary().escrow > 0, "still reserved"));
    assert_eq!(net.ledger.receipts().size(), size, "nothing settled yet");

    // The verifiers come back (same keys and directories, new ports).
    let ledger_url = net.role("ledger").expect("ledger").url.clone();
    let log_key = net.ledger.receipts().verifier_key().clone();
    let path = devnet::model_path(None).expect("model");
    for i in 0..3 {
        let name = format!("verifier-{i}");
        let member = verinfer_node::start::Member {
            key: load_key(&dir.path().join(&name).join("node.key")).expect("key"),
            ledger_url: ledger_url.clone(),
            listen: "127.0.0.1:0".into(),
            public_url: None,
            heartbeat: Duration::from_millis(500),
            dir: dir.path().join(&name),
        };
        let p = path.display().to_string();
        let engines =
            tokio::task::spawn_blocking(move || verinfer_node::start::load_engines(&p, 1, 1))
                .await
                .expect("join")
                .expect("engines");
        let running = verinfer_node::start::verifier(
            member,
            vec![engines],
            log_key.clone(),
            verinfer_node::roles::verifier::DEFAULT_QUEUE,
        )
        .await
        .expect("verifier again");
        net.roles.push((name, running));
    }

    // The answer is certified and settled; the client reads the outcome.
    let deadline = Instant::now() + Duration::from_secs(90);
    let outcome = loop {
        let v: Value = http
            .get(format!("{}{status_url}", net.url))
            .bearer_auth(&net.api_key)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if v["status"] != "pending" {
            break v;
        }
        assert!(Instant::now() < deadline, "still pending: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(outcome["status"], "verified", "{outcome}");
    let id: verinfer_types::Hash = outcome["receipt_id"]
        .as_str()
        .expect("receipt id")
        .parse()
        .expect("hash");
    let index = net.ledger.receipt_index(&id).expect("settled");
    let receipt = net.ledger.receipt(index).expect("read").expect("receipt");
    assert_eq!(
        receipt.result.output_text, r.text,
        "the text delivered is the text settled"
    );
    assert_eq!(
        receipt.certificate.verdicts.len(),
        2,
        "certified by a quorum"
    );
    assert_eq!(
        demo_balance(&net, dir.path()),
        balance - receipt.fees.total.0,
        "charged once"
    );
    // Settled, the receipt's fees are paid out (its node's share by the
    // same transaction; heartbeat fees keep the node's balance moving).
    assert!(receipt.fees.node.0 > 0, "the node is paid");
    net.ledger.with_state(|s| {
        assert_eq!(s.summary().escrow, 0, "no reservation left behind");
        s.check_invariants().expect("supply conserved");
    });
    // Someone else's key learns nothing about it.
    let other = http
        .get(format!("{}{status_url}", net.url))
        .send()
        .await
        .expect("status");
    assert_eq!(other.status().as_u16(), 401);
    net.stop();
}
