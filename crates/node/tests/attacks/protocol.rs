//! Attacks on the protocol's rules and records (docs/threat-model.md,
//! "Protocol"), each mounted as an outsider (public endpoints and a fresh
//! key) or a single bad verifier against a small devnet in this process.
//! Afterwards honest stake, the supply and every receipt are untouched.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use verinfer_ledger::evm::Link;
use verinfer_ledger::testing::TOKEN;
use verinfer_ledger::tx::{Evidence, Role, TxBody};
use verinfer_ledger::Transaction;
use verinfer_log::witness::add_cosignature;
use verinfer_node::client::{ClientError, LedgerClient, Peer};
use verinfer_node::devnet::{self, Devnet, DevnetOptions};
use verinfer_node::testing::{bundle, chat, get_json, pinned_trust, post, register_gateway};
use verinfer_node::wire::{CheckRequest, NodeView};
use verinfer_types::note::{Note, NoteSignature, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::records::{
    reason_code, Amount, Decision, Finality, Nonce, Receipt, Verdict, VerdictTag,
};
use verinfer_types::{Hash, PublicKey, Record, SecretKey, Signature, SignedRecord};
use verinfer_verify::receipt::{
    check_receipt, parse_log_key, parse_witness_key, witness_name, ReceiptBundle, ReceiptError,
    Status, Trust,
};

const WAIT: Duration = Duration::from_secs(30);

/// A devnet of `inference` nodes and 3 verifiers on free ports.
async fn start(inference: usize) -> (tempfile::TempDir, Devnet) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = DevnetOptions::new(dir.path().to_path_buf());
    o.listen = "127.0.0.1:0".into();
    o.heartbeat = Duration::from_millis(500);
    o.inference = inference;
    o.verifiers = 3;
    let net = devnet::run(o).await.expect("devnet");
    (dir, net)
}

fn ledger_url(net: &Devnet) -> String {
    net.role("ledger").expect("ledger role").url.clone()
}

/// What an attack must leave untouched: every stake, the supply, the slashes.
#[derive(Debug, PartialEq, Eq)]
struct Untouched {
    stakes: BTreeMap<PublicKey, u128>,
    supply: u128,
    slashed: usize,
}

fn untouched(net: &Devnet) -> Untouched {
    net.ledger.with_state(|s| {
        s.check_invariants().expect("supply conserved");
        Untouched {
            stakes: s.stakes.clone(),
            supply: s.total_supply,
            slashed: s.slashed.len(),
        }
    })
}

/// A verified, settled answer and its disclosed receipt.
async fn honest_receipt(
    http: &reqwest::Client,
    net: &Devnet,
    prompt: &str,
) -> (ReceiptBundle, Receipt) {
    let r = chat(http, &net.url, &net.api_key, prompt, 8, false)
        .await
        .expect("chat");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.verification(), "verified", "{:?}", r.verinfer);
    let id = r.receipt().expect("receipt id");
    let b = bundle(http, &net.url, &net.api_key, &id, WAIT)
        .await
        .expect("receipt bundle");
    let receipt = b.receipt.clone().expect("disclosed to its owner");
    (b, receipt)
}

/// Every receipt still checks out against the keys the devnet in `dir`
/// published at start (its log key, its 3 verifiers as witnesses, its
/// witness quorum), never against keys a receipt names.
async fn receipts_hold(
    http: &reqwest::Client,
    net: &Devnet,
    dir: &Path,
    bundles: &[ReceiptBundle],
) {
    let quorum = DevnetOptions::new(dir.to_path_buf()).quorum.clamp(1, 3) as usize;
    let trust = pinned_trust(net.ledger.receipts().verifier_key().clone(), dir, 3, quorum)
        .expect("the devnet's keys");
    for b in bundles {
        let fresh = bundle(http, &net.url, &net.api_key, &b.id, WAIT)
            .await
            .expect("receipt bundle");
        let report = check_receipt(&fresh, &trust).expect("receipt verifies");
        assert_eq!(report.status, Status::Verified);
    }
}

async fn verifiers(http: &reqwest::Client, net: &Devnet) -> Vec<NodeView> {
    let nodes: Vec<NodeView> = get_json(http, &format!("{}/ledger/nodes", ledger_url(net)))
        .await
        .expect("nodes");
    nodes
        .into_iter()
        .filter(|n| n.role == Role::Verifier)
        .collect()
}

fn node_key(dir: &Path, key: &PublicKey) -> SecretKey {
    (0..2)
        .map(|i| dir.join(format!("inference-{i}")).join("node.key"))
        .filter(|p| p.exists())
        .map(|p| verinfer_node::config::load_key(&p).expect("key"))
        .find(|k| k.public() == *key)
        .expect("the answering node's key")
}

/// Attack 1: a `response_format` schema the model cannot meet used to be
/// rejected with `schema` and slash every node the gateway retried on. The
/// schema is now a decoding constraint: the answer meets it (or ends
/// `length`), verifiers accept it, nobody is slashed; a schema the engines
/// cannot compile is refused before any node runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmeetable_schema_slashes_nobody() {
    let (dir, net) = start(2).await;
    let http = reqwest::Client::new();
    let (before_bundle, _) = honest_receipt(&http, &net, "Say hello.").await;
    let before = untouched(&net);

    let ask = |schema: Value| {
        post(
            &http,
            &net.url,
            &net.api_key,
            json!({
                "model": "smollm2-135m",
                "messages": [{"role": "user", "content": "Say hi"}],
                "max_tokens": 8,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": schema}
                },
            }),
        )
    };
    // An integer the model would not give by itself: the mask makes it.
    let r = ask(json!({"type": "object",
        "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}},
        "required": ["n"], "additionalProperties": false}))
    .await
    .expect("call");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.verification(), "verified", "{:?}", r.verinfer);
    let v: Value = serde_json::from_str(&r.text).expect("a complete document");
    assert!(v["n"].is_i64(), "{v}");

    let r = ask(json!({"type": "object", "not": {"type": "null"}}))
        .await
        .expect("call");
    assert_eq!(r.status, 400, "{}", r.text);
    let err: Value = serde_json::from_str(&r.text).expect("error body");
    assert_eq!(
        err["error"]["param"], "response_format.json_schema.schema",
        "{err}"
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`not`"),
        "{err}"
    );

    let c = net.gateway().expect("gateway").counters();
    assert_eq!((c.rejected, c.slashes), (0, 0), "{c:?}");
    assert_eq!(untouched(&net), before);
    receipts_hold(&http, &net, dir.path(), &[before_bundle]).await;
    net.stop();
}

/// Attack 2: an honest Result checked against another Request collects
/// `wrong_request` rejections; submitted as slash evidence from a fresh key
/// with no balance, they must slash nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_for_another_request_slash_nobody() {
    let (dir, net) = start(1).await;
    let http = reqwest::Client::new();
    let (b, receipt) = honest_receipt(&http, &net, "What is 2+2?").await;

    // Verifiers answer registered gateways only: the attacker registers one
    // of its own (the minimum stake) to collect verdicts at all.
    let outsider = SecretKey::generate();
    register_gateway(&net, dir.path(), &outsider, "http://127.0.0.1:9")
        .await
        .expect("register a gateway");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = untouched(&net);
    let mut other = receipt.request.clone();
    other.nonce = Nonce::random();
    other.requester = outsider.public();
    other.signer = outsider.public();
    other.sign(&outsider).expect("sign");
    let other_hash = other.hash().expect("hash");

    // Any signed envelope may ask a verifier for a verdict.
    let peer = Peer::new(outsider.clone());
    let body = serde_json::to_vec(&CheckRequest {
        request: other.clone(),
        result: receipt.result.clone(),
    })
    .expect("body");
    let mut rejections = Vec::new();
    for v in verifiers(&http, &net).await {
        let resp = peer
            .post(&v.key, &v.endpoint, "/verifier/check", body.clone(), WAIT)
            .await
            .expect("verdict");
        let verdict: Verdict = resp.json().await.expect("verdict json");
        assert_eq!(verdict.decision, Decision::Reject);
        // The verdict names the pair it judged (verdict.v2).
        assert_eq!(verdict.request, other_hash);
        assert_eq!(
            reason_code(verdict.reason.as_deref().unwrap_or("")),
            "wrong_request"
        );
        rejections.push(verdict);
    }
    assert_eq!(rejections.len(), 3);

    // As evidence, with either request: refused.
    let ledger = LedgerClient::new(&ledger_url(&net), outsider.clone());
    for request in [other, receipt.request.clone()] {
        let evidence = Evidence::Node {
            request,
            result: receipt.result.clone(),
            committee: rejections.clone(),
        };
        let slash = TxBody::Slash {
            evidence: Box::new(evidence),
        };
        match ledger.submit_as(&outsider, slash).await {
            Err(ClientError::Refused(r)) => assert!(r.error.contains("evidence"), "{r:?}"),
            other => panic!("slash evidence was not refused: {other:?}"),
        }
    }
    assert_eq!(untouched(&net), before);
    receipts_hold(&http, &net, dir.path(), &[b]).await;
    net.stop();
}

/// Attack 6 (as far as it runs without a chain): verifiers co-signed
/// on-chain slashes whose committee was any keys. An outsider's own keys
/// reject an honest answer; no verifier signs, and the ledger refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minority_or_outsider_committee_cannot_slash() {
    let (dir, net) = start(1).await;
    let http = reqwest::Client::new();
    let (b, receipt) = honest_receipt(&http, &net, "Name a colour.").await;
    let before = untouched(&net);

    let outsider = SecretKey::generate();
    let result_hash = receipt.result.hash().expect("hash");
    let committee: Vec<Verdict> = (0..3)
        .map(|_| {
            let k = SecretKey::generate();
            let mut v = Verdict {
                tag: VerdictTag,
                request: receipt.result.request,
                result: result_hash,
                decision: Decision::Reject,
                reason: Some("token_mismatch: position 0: claimed 1, decoding picks 2".into()),
                failed_position: Some(0),
                checked_positions: 1,
                cost_micros: 1,
                verifier: k.public(),
                signature: Signature::default(),
            };
            v.sign(&k).expect("sign");
            v
        })
        .collect();
    let evidence = Evidence::Node {
        request: receipt.request.clone(),
        result: receipt.result.clone(),
        committee,
    };
    // On a chain the accused's link is public.
    let link = Link::new(&node_key(dir.path(), &receipt.result.node)).expect("link");
    let body = serde_json::to_vec(&json!({
        "chain_id": 31337,
        "contract": "0x00000000000000000000000000000000000000aa",
        "accused": link,
        "evidence": evidence,
    }))
    .expect("body");
    let peer = Peer::new(outsider.clone());
    for v in verifiers(&http, &net).await {
        match peer
            .post(
                &v.key,
                &v.endpoint,
                "/verifier/evm/slash",
                body.clone(),
                WAIT,
            )
            .await
        {
            // Only the ledger's key may ask for slash signatures.
            Err(ClientError::Status { status: 403, .. }) => {}
            Err(ClientError::Status {
                status: 422, body, ..
            }) => {
                assert!(body.contains("count for nothing"), "{body}")
            }
            other => panic!("verifier {} signed a made-up committee: {other:?}", v.key),
        }
    }
    let tx = Transaction::signed(
        &outsider,
        0,
        TxBody::Slash {
            evidence: Box::new(evidence),
        },
    )
    .expect("tx");
    let ledger = LedgerClient::new(&ledger_url(&net), outsider);
    assert!(matches!(
        ledger.submit(&tx).await,
        Err(ClientError::Refused(_))
    ));
    assert_eq!(untouched(&net), before);
    receipts_hold(&http, &net, dir.path(), &[b]).await;
    net.stop();
}

/// How the bad witness answers `add-checkpoint`.
const MALFORMED: u8 = 0;
const FORGED: u8 = 1;

/// A staked verifier that answers cosigning requests badly: a reply that is
/// no signature at all, or its own valid cosignature plus lines forged under
/// every honest witness's name.
async fn bad_witness(key: SecretKey, honest: Vec<PublicKey>, mode: Arc<AtomicU8>) -> String {
    let app = axum::Router::new().route(
        "/witness/add-checkpoint",
        axum::routing::post(move |body: String| {
            let (key, honest, mode) = (key.clone(), honest.clone(), mode.clone());
            async move {
                if mode.load(Ordering::SeqCst) == MALFORMED {
                    return "this is not a signature line\n".to_string();
                }
                let Some((_, text)) = body.split_once("\n\n") else {
                    return String::new();
                };
                let Ok(signed) = Note::parse(text) else {
                    return String::new();
                };
                let mut note = Note::new(&signed.text).expect("note text");
                add_cosignature(&mut note, &witness_name(&key.public()), &key, 1).expect("cosign");
                for w in &honest {
                    let vk = VerifierKey::new(&witness_name(w), ALG_COSIGNATURE_V1, *w)
                        .expect("key name");
                    note.signatures.push(NoteSignature {
                        name: vk.name.clone(),
                        key_id: vk.id(),
                        sig: vec![7; 72],
                    });
                }
                note.to_string()[note.text.len() + 1..].to_string()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn refused_cosignatures(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("verinfer_cosignatures_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("verinfer_cosignatures_refused_total in /metrics")
}

/// Attack 5: one bad verifier's reply used to abort every cosigning round
/// (malformed) or void another witness's valid cosignature (forged line).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_bad_witness_cannot_stop_finality() {
    let (dir, net) = start(1).await;
    let http = reqwest::Client::new();
    let honest: Vec<PublicKey> = verifiers(&http, &net).await.iter().map(|v| v.key).collect();
    let (first, _) = honest_receipt(&http, &net, "Count to three.").await;

    // The bad verifier stakes and registers like any other.
    let treasury =
        verinfer_node::config::load_key(&dir.path().join("treasury.key")).expect("treasury key");
    let bad = SecretKey::generate();
    let mode = Arc::new(AtomicU8::new(MALFORMED));
    let endpoint = bad_witness(bad.clone(), honest.clone(), mode.clone()).await;
    let submit = |key: &SecretKey, body: TxBody| {
        let nonce = net.ledger.with_state(|s| s.nonce(&key.public()));
        net.ledger
            .submit(&Transaction::signed(key, nonce, body).expect("tx"))
            .expect("applied");
    };
    submit(
        &treasury,
        TxBody::Transfer {
            to: bad.public(),
            amount: Amount(2_000 * TOKEN),
        },
    );
    submit(
        &bad,
        TxBody::Stake {
            amount: Amount(1_500 * TOKEN),
        },
    );
    submit(
        &bad,
        TxBody::Register {
            role: Role::Verifier,
            endpoint,
        },
    );
    let before = untouched(&net);

    let metrics = format!("{}/metrics", ledger_url(&net));
    let pinned = |b: &ReceiptBundle| {
        Trust::pinned(
            parse_log_key(&b.log_key).expect("log key"),
            honest
                .iter()
                .map(|k| {
                    let vk =
                        VerifierKey::new(&witness_name(k), ALG_COSIGNATURE_V1, *k).expect("key");
                    parse_witness_key(&vk.to_string()).expect("witness key")
                })
                .collect(),
            None,
        )
    };
    let mut bundles = vec![first];
    for m in [MALFORMED, FORGED] {
        mode.store(m, Ordering::SeqCst);
        let refused_before = refused_cosignatures(
            &http
                .get(&metrics)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text"),
        );
        // A new receipt grows the log: its checkpoint must still become final.
        let (b, _) = honest_receipt(&http, &net, &format!("Say the word {m}.")).await;
        let report = check_receipt(&b, &pinned(&b)).expect("final with the honest witnesses");
        assert!(report.checkpoint.cosignatures >= 2, "{report:?}");
        let refused = refused_cosignatures(
            &http
                .get(&metrics)
                .send()
                .await
                .expect("metrics")
                .text()
                .await
                .expect("text"),
        );
        assert!(refused > refused_before, "the bad reply was counted ({m})");
        bundles.push(b);
    }
    assert_eq!(untouched(&net), before);
    receipts_hold(&http, &net, dir.path(), &bundles).await;
    net.stop();
}

/// Attack 8: a receipt edited to say `witness_quorum: 0`, every cosignature
/// removed, passed a check that pinned the witnesses but took the quorum
/// from the receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edited_receipt_quorum_is_ignored() {
    let (dir, net) = start(1).await;
    let http = reqwest::Client::new();
    let (b, _) = honest_receipt(&http, &net, "Name a fruit.").await;
    let before = untouched(&net);

    let log_key = parse_log_key(&b.log_key).expect("log key");
    let witnesses: Vec<VerifierKey> = b
        .witnesses
        .iter()
        .map(|w| parse_witness_key(w).expect("witness key"))
        .collect();
    let mut edited = b.clone();
    edited.witness_quorum = 0;
    let note = edited.checkpoint.clone().expect("checkpoint");
    edited.checkpoint = Some(
        note.split_inclusive('\n')
            .filter(|l| !l.starts_with("\u{2014} witness.verinfer/"))
            .collect(),
    );
    // The caller pins the witnesses (and, by default, a majority of them).
    let trust = Trust::pinned(log_key, witnesses.clone(), None);
    assert_eq!(trust.witness_quorum, 2);
    assert_eq!(
        check_receipt(&edited, &trust).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 0, need: 2 }
    );
    // The honest receipt passes the same pinned check.
    check_receipt(&b, &trust).expect("honest receipt verifies");
    assert_eq!(untouched(&net), before);
    receipts_hold(&http, &net, dir.path(), &[b]).await;
    net.stop();
}

/// An `optimistic(window_secs)` chat: the reply, and the receipt bundle (as
/// its owner sees it).
async fn optimistic_chat(
    http: &reqwest::Client,
    net: &Devnet,
    prompt: &str,
    window_secs: u64,
) -> ReceiptBundle {
    let r = post(
        http,
        &net.url,
        &net.api_key,
        json!({
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 8,
            "verification": {"mode": "optimistic", "window_secs": window_secs},
        }),
    )
    .await
    .expect("chat");
    assert_eq!(r.status, 200, "{}", r.text);
    // Provisional at once: no verifier checked it yet.
    assert_eq!(r.verification(), "provisional", "{:?}", r.verinfer);
    let id = r.receipt().expect("receipt id");
    bundle(http, &net.url, &net.api_key, &id, WAIT)
        .await
        .expect("receipt bundle")
}

/// All `key` holds: balance, stake and unbonding stake.
fn holdings(s: &verinfer_ledger::State, key: &PublicKey) -> u128 {
    s.balance(key) + s.stake(key) + s.unbonding_of(key)
}

/// Polls receipt `id` until the ledger states `want` as its finality.
async fn finality_becomes(http: &reqwest::Client, net: &Devnet, id: &Hash, want: Finality) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let b = bundle(http, &net.url, &net.api_key, id, WAIT)
            .await
            .expect("receipt bundle");
        if b.finality == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "receipt {id} is {:?}, never {want:?}",
            b.finality
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Attack 7: `optimistic(window)` answers were never checked, so a node
/// could answer wrongly and keep the fee. Now the drawn verifier re-checks
/// each one during its window; a cheat is challenged and overturned inside
/// it (the requester refunded, the node slashed), and an honest answer
/// becomes final when the window passes, its node unslashed. The gateway
/// and the verifiers both watch: duplicate challenges are harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimistic_cheats_are_overturned_inside_the_window_and_honest_answers_become_final() {
    cheats_overturned_honest_final(true).await;
}

/// Attack 7 with a gateway that colludes with its node and never
/// challenges (its watch stopped): the verifiers watch the provisional
/// answers in the ledger on their own, overturn the cheat inside its
/// window, and let the honest answer become final.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verifiers_alone_overturn_optimistic_cheats_and_honest_answers_become_final() {
    cheats_overturned_honest_final(false).await;
}

/// Optimistic calls (15 s windows) until a cheating node and an honest one
/// each answered one; the cheat must be overturned inside its window and
/// the honest answer become final, with the gateway watching or not.
async fn cheats_overturned_honest_final(gateway_watches: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut o = DevnetOptions::new(dir.path().to_path_buf());
    o.listen = "127.0.0.1:0".into();
    o.heartbeat = Duration::from_millis(500);
    o.inference = 2;
    o.faulty_inference = 1;
    o.verifiers = 3;
    let net = devnet::run(o).await.expect("devnet");
    if !gateway_watches {
        net.gateway().expect("gateway").stop_watching();
    }
    let http = reqwest::Client::new();
    let cheater = verinfer_node::config::load_key(&dir.path().join("inference-0").join("node.key"))
        .expect("the faulty node's key")
        .public();

    // Calls until each node answered one (the cheater leaves once slashed).
    let mut cheat = None;
    let mut honest = None;
    for i in 0..8 {
        let stakes = net.ledger.with_state(|s| s.stakes.clone());
        let held = net.ledger.with_state(|s| holdings(s, &cheater));
        let b = optimistic_chat(&http, &net, &format!("Name a number above {i}."), 15).await;
        // The ledger states its finality (a cheat may be overturned already).
        assert!(
            b.finality.is_some(),
            "no finality for an optimistic receipt"
        );
        if b.leaf.node == cheater && cheat.is_none() {
            cheat = Some((b, stakes, held));
        } else if b.leaf.node != cheater && honest.is_none() {
            honest = Some(b);
        }
        if cheat.is_some() && honest.is_some() {
            break;
        }
    }
    let (cheat, stakes_before, held_before) = cheat.expect("the faulty node answered a call");
    let honest = honest.expect("an honest node answered a call");

    // The cheat: challenged and overturned inside its 15 s window.
    finality_becomes(&http, &net, &cheat.id, Finality::Overturned).await;
    let receipt = cheat.receipt.clone().expect("disclosed to its owner");
    let request = receipt.request.hash().expect("hash");
    let result = receipt.result.hash().expect("hash");
    net.ledger.with_state(|s| {
        s.check_invariants().expect("supply conserved");
        assert!(
            s.slashed.contains(&(result, cheater)),
            "the cheater was slashed"
        );
        // Slashed (the node may have staked again since, from its balance).
        let slash = stakes_before[&cheater] * u128::from(s.params.slash_bps) / 10_000;
        assert!(holdings(s, &cheater) + slash <= held_before);
        assert!(
            !s.provisional.contains_key(&request),
            "nothing left to pay out"
        );
        assert!(s.overturned.contains(&request));
    });

    // The honest answer: final once its window passed, its node whole.
    finality_becomes(&http, &net, &honest.id, Finality::Final).await;
    net.ledger.with_state(|s| {
        assert_eq!(s.stake(&honest.leaf.node), stakes_before[&honest.leaf.node]);
        assert_eq!(s.slashed.len(), 1, "only the cheat was slashed");
    });
    net.stop();
}

/// Attack 7, the other way: a challenge used to slash an honest optimistic
/// answer, with rejections of the Result against another Request, with
/// outsiders' keys as the committee, or after the window. Each is refused
/// with its reason; nothing moves and the answer becomes final.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn challenges_of_an_honest_optimistic_answer_are_refused() {
    let (dir, net) = start(1).await;
    let http = reqwest::Client::new();
    let b = optimistic_chat(&http, &net, "What is 3+3?", 20).await;
    let receipt = b.receipt.clone().expect("disclosed to its owner");
    let outsider = SecretKey::generate();
    register_gateway(&net, dir.path(), &outsider, "http://127.0.0.1:9")
        .await
        .expect("register a gateway");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = untouched(&net);

    // Rejections of the honest Result checked against another Request.
    let mut other = receipt.request.clone();
    other.nonce = Nonce::random();
    other.requester = outsider.public();
    other.signer = outsider.public();
    other.sign(&outsider).expect("sign");
    let peer = Peer::new(outsider.clone());
    let body = serde_json::to_vec(&CheckRequest {
        request: other.clone(),
        result: receipt.result.clone(),
    })
    .expect("body");
    let mut rejections = Vec::new();
    for v in verifiers(&http, &net).await {
        let resp = peer
            .post(&v.key, &v.endpoint, "/verifier/check", body.clone(), WAIT)
            .await
            .expect("verdict");
        rejections.push(resp.json::<Verdict>().await.expect("verdict json"));
    }
    // Outsiders' keys rejecting for a node fault.
    let result_hash = receipt.result.hash().expect("hash");
    let forged: Vec<Verdict> = (0..3)
        .map(|_| {
            let k = SecretKey::generate();
            let mut v = Verdict {
                tag: VerdictTag,
                request: receipt.result.request,
                result: result_hash,
                decision: Decision::Reject,
                reason: Some("token_mismatch: position 0".into()),
                failed_position: Some(0),
                checked_positions: 1,
                cost_micros: 1,
                verifier: k.public(),
                signature: Signature::default(),
            };
            v.sign(&k).expect("sign");
            v
        })
        .collect();
    let ledger = LedgerClient::new(&ledger_url(&net), outsider.clone());
    let challenge = |request, committee| TxBody::Challenge {
        evidence: Box::new(Evidence::Node {
            request,
            result: receipt.result.clone(),
            committee,
        }),
    };
    let attempts = [
        (
            challenge(other, rejections.clone()),
            "no provisional answer",
        ),
        (
            challenge(receipt.request.clone(), rejections),
            "another request or result",
        ),
        (
            challenge(receipt.request.clone(), forged.clone()),
            "count for nothing",
        ),
    ];
    for (body, why) in attempts {
        match ledger.submit_as(&outsider, body).await {
            Err(ClientError::Refused(r)) => assert!(r.error.contains(why), "{r:?} (wanted {why})"),
            other => panic!("challenge was not refused: {other:?}"),
        }
    }
    // After the window: refused as final, whatever the evidence.
    finality_becomes(&http, &net, &b.id, Finality::Final).await;
    match ledger
        .submit_as(&outsider, challenge(receipt.request.clone(), forged))
        .await
    {
        Err(ClientError::Refused(r)) => assert!(r.error.contains("final"), "{r:?}"),
        other => panic!("late challenge was not refused: {other:?}"),
    }
    assert_eq!(untouched(&net), before);
    net.stop();
}
