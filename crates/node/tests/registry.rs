//! End-to-end: a devnet whose model a publisher registered in the ledger.
//! `/v1/models` lists it with its prices and publisher, the inference node
//! declared it, each settled answer pays the publisher its share with the
//! supply conserved, and once governance delists it the gateway refuses it
//! naming `model`. And a devnet serving two models (SmolLM2 and Gemma 3),
//! each published by its own publisher: answers from each verified, each
//! publisher paid exactly its share of its own model's fees, the supply
//! conserved, and a model a node does not run refused naming `model`.

use std::path::Path;
use std::time::{Duration, Instant};
use verinfer_ledger::state::ProposalStatus;
use verinfer_ledger::tx::{Change, Role};
use verinfer_ledger::{Transaction, TxBody};
use verinfer_node::config::load_key;
use verinfer_node::devnet::{self, Devnet, DevnetOptions, PRICE_IN, PRICE_OUT};
use verinfer_node::testing::{bundle, chat, get_json, post, signed_post};
use verinfer_types::{Hash, SecretKey};

const WAIT: Duration = Duration::from_secs(30);
const SHARE_BPS: u32 = 1_500;

fn submit(net: &Devnet, key: &SecretKey, body: TxBody) -> verinfer_ledger::service::Applied {
    let nonce = net.ledger.with_state(|s| s.nonce(&key.public()));
    let tx = Transaction::signed(key, nonce, body).expect("signs");
    net.ledger.submit(&tx).expect("applies")
}

fn node_key(dir: &Path, name: &str) -> SecretKey {
    load_key(&dir.join(name).join("node.key")).expect("node key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_published_model_pays_its_publisher_until_governance_delists_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevnetOptions::new(dir.path().to_path_buf());
    opts.listen = "127.0.0.1:0".into();
    opts.heartbeat = Duration::from_millis(500);
    opts.inference = 1;
    opts.publisher_share_bps = Some(SHARE_BPS);
    let net = devnet::run(opts).await.expect("devnet");
    let http = reqwest::Client::new();
    let publisher = load_key(&dir.path().join("publisher.key"))
        .expect("publisher key")
        .public();

    // Listed with its prices per 1k tokens and its publisher.
    let models: serde_json::Value = get_json(&http, &format!("{}/v1/models", net.url))
        .await
        .expect("models");
    let m = &models["data"][0]["verinfer"];
    assert_eq!(m["per_tokens"], 1000, "{models}");
    assert_eq!(m["price_in"], (PRICE_IN * 1000).to_string());
    assert_eq!(m["price_out"], (PRICE_OUT * 1000).to_string());
    assert_eq!(m["publisher"]["account"], publisher.to_string());
    assert_eq!(m["publisher"]["share_bps"], SHARE_BPS);
    let id: Hash = m["model_id"].as_str().expect("id").parse().expect("hash");
    // The inference node declared it in the ledger.
    let inference = node_key(dir.path(), "inference-0").public();
    assert!(net
        .ledger
        .with_state(|s| s.nodes[&inference].models.contains(&id)));

    // Each answer pays the publisher its share; the supply is conserved.
    let before = net.ledger.with_state(|s| s.balance(&publisher));
    let mut paid = 0;
    for prompt in ["What is 2+2?", "Name a colour."] {
        let r = chat(&http, &net.url, &net.api_key, prompt, 8, false)
            .await
            .expect("chat");
        assert_eq!(r.status, 200, "{}", r.text);
        let receipt = r.receipt().expect("receipt id");
        let b = bundle(&http, &net.url, &net.api_key, &receipt, WAIT)
            .await
            .expect("receipt");
        let fees = b.leaf.fees;
        let share = fees.publisher.expect("the leaf names the publisher");
        assert_eq!(share.account, publisher);
        assert_eq!(
            share.amount.0,
            fees.total.0 * u128::from(SHARE_BPS) / 10_000
        );
        assert_eq!(
            fees.node.0 + fees.verifiers.0 + fees.treasury.0 + share.amount.0,
            fees.total.0
        );
        paid += share.amount.0;
    }
    assert!(paid > 0);
    net.ledger.with_state(|s| {
        assert_eq!(s.balance(&publisher), before + paid);
        s.check_invariants().expect("supply conserved");
    });

    // Governance delists it: the stakers vote it out.
    let names = [
        "inference-0",
        "verifier-0",
        "verifier-1",
        "verifier-2",
        "gateway",
    ];
    let keys: Vec<SecretKey> = names.iter().map(|n| node_key(dir.path(), n)).collect();
    let proposal = submit(
        &net,
        &keys[0],
        TxBody::Propose {
            change: Change::RemoveModel { id },
        },
    )
    .effects
    .proposal
    .expect("proposal id");
    for k in &keys {
        if net.ledger.with_state(|s| s.proposals[&proposal].status) == ProposalStatus::Passed {
            break;
        }
        submit(
            &net,
            k,
            TxBody::Vote {
                proposal,
                yes: true,
            },
        );
    }
    net.ledger.with_state(|s| {
        assert!(s.delisted.contains_key(&id));
        assert!(s.nodes[&inference].models.is_empty());
        assert!(s
            .nodes
            .values()
            .all(|n| n.role != Role::Inference || n.models.is_empty()));
    });
    // Once the gateway has read the ledger again, the model is unknown: 404
    // naming `model`, and nothing is reserved.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = chat(&http, &net.url, &net.api_key, "What is 2+2?", 8, false)
            .await
            .expect("chat");
        if r.status == 404 {
            let body: serde_json::Value = serde_json::from_str(&r.text).expect("error body");
            assert_eq!(body["error"]["param"], "model", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still served: {} {}",
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let models: serde_json::Value = get_json(&http, &format!("{}/v1/models", net.url))
        .await
        .expect("models");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(0), "{models}");
    net.ledger
        .with_state(|s| s.check_invariants())
        .expect("supply conserved");
    net.stop();
}

const GEMMA: &str = "gemma3-270m";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_models_are_served_side_by_side_and_each_publisher_is_paid_its_share() {
    verinfer_inference::models::ensure_default_model().expect("SmolLM2");
    verinfer_inference::models::ensure_model(GEMMA).expect("Gemma 3");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevnetOptions::new(dir.path().to_path_buf());
    opts.listen = "127.0.0.1:0".into();
    opts.heartbeat = Duration::from_millis(500);
    // The smallest network that certifies: one node, a quorum of two.
    opts.inference = 1;
    opts.verifiers = 2;
    opts.verifier_workers = 1;
    opts.models = vec!["smollm2-135m".into(), GEMMA.into()];
    opts.publisher_share_bps = Some(SHARE_BPS);
    let net = devnet::run(opts).await.expect("devnet");
    let http = reqwest::Client::new();
    let publisher = |file: &str| {
        load_key(&dir.path().join(file))
            .expect("publisher key")
            .public()
    };
    let publishers = [
        ("smollm2-135m", publisher("publisher.key")),
        (GEMMA, publisher(&format!("publisher-{GEMMA}.key"))),
    ];

    // Both listed, each with its publisher, and declared by the node.
    let models: serde_json::Value = get_json(&http, &format!("{}/v1/models", net.url))
        .await
        .expect("models");
    let inference = node_key(dir.path(), "inference-0").public();
    let mut ids = Vec::new();
    for (name, account) in &publishers {
        let m = models["data"]
            .as_array()
            .and_then(|d| d.iter().find(|m| m["id"] == *name))
            .unwrap_or_else(|| panic!("{name} listed: {models}"));
        assert_eq!(m["verinfer"]["publisher"]["account"], account.to_string());
        let id: Hash = m["verinfer"]["model_id"]
            .as_str()
            .expect("id")
            .parse()
            .expect("hash");
        assert!(net
            .ledger
            .with_state(|s| s.nodes[&inference].models.contains(&id)));
        ids.push(id);
    }

    // A verified answer from each model pays that model's publisher its
    // share, and nobody else's.
    let before: Vec<u128> = publishers
        .iter()
        .map(|(_, p)| net.ledger.with_state(|s| s.balance(p)))
        .collect();
    let mut last = None;
    let mut paid = Vec::new();
    for ((name, account), id) in publishers.iter().zip(&ids) {
        let body = serde_json::json!({
            "model": name,
            "messages": [{"role": "user", "content": "What is 2+2?"}],
            "max_tokens": 6,
        });
        let r = post(&http, &net.url, &net.api_key, body)
            .await
            .expect("chat");
        assert_eq!(r.status, 200, "{name}: {}", r.text);
        assert_eq!(r.verification(), "verified", "{name}: {:?}", r.verinfer);
        let receipt = r.receipt().expect("receipt id");
        let b = bundle(&http, &net.url, &net.api_key, &receipt, WAIT)
            .await
            .expect("receipt");
        let full = b.receipt.clone().expect("the owner sees the receipt");
        assert_eq!(full.result.model, *id, "{name} answered by its own model");
        let fees = b.leaf.fees;
        let share = fees.publisher.expect("the leaf names the publisher");
        assert_eq!(share.account, *account, "{name}'s publisher");
        assert_eq!(
            share.amount.0,
            fees.total.0 * u128::from(SHARE_BPS) / 10_000
        );
        assert!(share.amount.0 > 0);
        assert_eq!(
            fees.node.0 + fees.verifiers.0 + fees.treasury.0 + share.amount.0,
            fees.total.0
        );
        paid.push(share.amount.0);
        last = Some(full);
    }
    net.ledger.with_state(|s| {
        for (((_, account), before), paid) in publishers.iter().zip(&before).zip(&paid) {
            assert_eq!(s.balance(account), before + paid, "exactly its share");
        }
        s.check_invariants().expect("supply conserved");
    });

    // The explorer counts each model's calls and fees.
    let settlement: serde_json::Value =
        get_json(&http, &format!("{}/v1/explorer/settlement", net.url))
            .await
            .expect("settlement");
    for id in &ids {
        let m = settlement["models"]
            .as_array()
            .and_then(|d| d.iter().find(|m| m["id"] == id.to_string()))
            .unwrap_or_else(|| panic!("{id} in the explorer: {settlement}"));
        assert_eq!(m["fees_paid"]["receipts"], 1, "{m}");
    }

    // A model the node does not run: 404 naming `model`, from the
    // inference node and from a verifier.
    let gateway = node_key(dir.path(), "gateway");
    let mut receipt = last.expect("a receipt");
    receipt.request.model = Hash::of(b"a model nobody runs");
    for (name, path, body) in [
        (
            "inference-0",
            "/inference/respond",
            serde_json::to_vec(&receipt.request),
        ),
        (
            "verifier-0",
            "/verifier/check",
            serde_json::to_vec(&serde_json::json!({
                "request": receipt.request,
                "result": receipt.result,
            })),
        ),
    ] {
        let url = net.role(name).expect("role").url.clone();
        let to = node_key(dir.path(), name).public();
        let (status, text) = signed_post(&http, &gateway, &to, &url, path, body.expect("json"))
            .await
            .expect("post");
        assert_eq!(status, 404, "{name}: {text}");
        assert!(text.contains("model"), "{name}: {text}");
    }
    net.stop();
}
