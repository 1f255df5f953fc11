#![allow(clippy::unwrap_used)]
//! The checker against honest and dishonest results, on tiny synthetic GGUF
//! models written by `testing::TinySpec` (fast: no real model needed).

use std::path::{Path, PathBuf};

use verinfer_inference::respond::respond;
use verinfer_inference::testing::{tiny_model, TinySpec};
use verinfer_inference::{Engine, EngineOptions};
use verinfer_types::records::{
    Decision, Decoding, FinishReason, InferenceResult, Input, Message, Nonce, Policy, Request,
    RequestTag, Verdict,
};
use verinfer_types::testing::key;
use verinfer_types::{Hash, Record, SecretKey, SignedRecord};
use verinfer_verify::checker::{CheckError, Checker, Recompute};
use verinfer_verify::rules::{self, Rejection};

struct Models {
    _dir: tempfile::TempDir,
    path: PathBuf,
    id: Hash,
    other: PathBuf,
}

fn models() -> Models {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model(&TinySpec::default());
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let other_bytes = tiny_model(&TinySpec {
        seed: 2,
        ..TinySpec::default()
    });
    let other = dir.path().join("other.gguf");
    std::fs::write(&other, &other_bytes).unwrap();
    Models {
        _dir: dir,
        path,
        id: Hash::of(&bytes),
        other,
    }
}

fn engine(path: &Path, threads: usize) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            threads,
            force_scalar: false,
        },
    )
    .unwrap()
}

fn checker(m: &Models, threads: usize) -> Checker<Engine> {
    Checker::new(engine(&m.path, threads), m.id, key(30))
}

fn greedy(max_tokens: u32) -> Decoding {
    Decoding {
        temperature_milli: 0,
        max_tokens,
        ..Decoding::default()
    }
}

/// Seeded sampling, hot: random tiny models mostly repeat their input token
/// (tied embeddings), so a high temperature is what makes seeds and models
/// give different outputs.
fn sampled(max_tokens: u32, seed: u64) -> Decoding {
    Decoding {
        temperature_milli: 4000,
        top_k: 40,
        top_p_milli: 950,
        seed,
        max_tokens,
        stop: Vec::new(),
        ..Default::default()
    }
}

fn request(model: Hash, input: Input, decoding: Decoding, nonce: u8) -> Request {
    let k = key(1);
    let mut r = Request {
        tag: RequestTag,
        model,
        input,
        decoding,
        policy: Policy::default(),
        requester: k.public(),
        nonce: Nonce([nonce; 16]),
        signer: k.public(),
        signature: Default::default(),
    };
    r.sign(&k).unwrap();
    r
}

fn prompt(text: &str) -> Input {
    Input::Prompt(text.to_string())
}

fn sign(res: &mut InferenceResult) {
    res.sign(&key(2)).unwrap();
}

/// What an honest node running `engine` answers (as `verinfer infer --json`),
/// claiming the requested model (a swapped engine's answer claims it too).
fn answer(engine: &mut Engine, req: &Request) -> InferenceResult {
    respond(engine, req.model, req, &key(2), &mut |_, _| {}).unwrap()
}

/// Re-derives text and usage after a fault edits the tokens, and re-signs:
/// a dishonest result that is consistent everywhere but in its tokens.
fn consistent(engine: &Engine, req: &Request, mut res: InferenceResult) -> InferenceResult {
    res.output_text = rules::expected_text(
        &res.output_tokens,
        res.finish_reason,
        &req.decoding.stop,
        engine.detokenizer(),
    )
    .unwrap();
    res.usage.completion_tokens = res.output_tokens.len() as u32;
    sign(&mut res);
    res
}

fn rejection(c: &mut Checker<Engine>, req: &Request, res: &InferenceResult) -> Option<Rejection> {
    c.check(req, res).unwrap().rejection
}

fn code_at(c: &mut Checker<Engine>, req: &Request, res: &InferenceResult) -> (String, Option<u32>) {
    let v = c.verdict(req, res).unwrap();
    v.verify_signature().unwrap();
    assert_eq!(v.result, res.hash().unwrap());
    assert_eq!(v.decision, Decision::Reject, "{:?}", v.reason);
    let reason = v.reason.unwrap();
    let code = reason.split(':').next().unwrap().to_string();
    (code, v.failed_position)
}

const PROMPTS: [&str; 4] = [
    "hello world",
    "the world or the hell",
    "a b c d e f",
    "What is the capital of France?",
];

fn first_difference(a: &[u32], b: &[u32]) -> Option<u32> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|p| p as u32)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len()) as u32))
}

#[test]
fn honest_results_are_accepted_for_any_thread_count() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut checkers = [checker(&m, 1), checker(&m, 2), checker(&m, 4)];
    let mut n = 0;
    for (i, p) in PROMPTS.iter().enumerate() {
        for d in [greedy(24), sampled(24, i as u64), sampled(40, 7)] {
            let req = request(m.id, prompt(p), d, i as u8);
            let res = answer(&mut node, &req);
            for c in checkers.iter_mut() {
                let v = c.verdict(&req, &res).unwrap();
                assert_eq!(v.decision, Decision::Accept, "{p:?}: {:?}", v.reason);
                assert_eq!(v.checked_positions as usize, res.output_tokens.len());
                assert_eq!(v.verifier, key(30).public());
                v.verify_signature().unwrap();
                n += 1;
            }
        }
    }
    // Chat messages go through the model's chat template on both sides.
    let input = Input::Messages(vec![Message {
        role: "user".into(),
        content: "hello".into(),
    }]);
    let req = request(m.id, input, sampled(16, 3), 99);
    let res = answer(&mut node, &req);
    assert_eq!(rejection(&mut checkers[0], &req, &res), None);
    assert_eq!(n, 36);
}

#[test]
fn honest_stop_and_length_are_accepted_and_extensions_rejected() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut c = checker(&m, 2);
    let free = answer(
        &mut node,
        &request(m.id, prompt("hello world"), greedy(40), 1),
    );
    assert_eq!(free.finish_reason, FinishReason::Length);
    assert_eq!(
        rejection(
            &mut c,
            &request(m.id, prompt("hello world"), greedy(40), 1),
            &free
        ),
        None
    );

    // A stop sequence the free run produces: a piece of its text.
    let text = free.output_text.clone();
    let stop: String = text.chars().skip(6).take(2).collect();
    assert!(!stop.is_empty());
    let mut d = greedy(40);
    d.stop = vec![stop.clone()];
    let req = request(m.id, prompt("hello world"), d, 2);
    let res = answer(&mut node, &req);
    assert_eq!(res.finish_reason, FinishReason::Stop);
    assert_eq!(rejection(&mut c, &req, &res), None);
    let k = res.output_tokens.len();
    assert!(k < free.output_tokens.len());

    // extend: the honest continuation past the stop, claimed as a stop.
    let mut ext = res.clone();
    ext.output_tokens = free.output_tokens[..k + 3].to_vec();
    let ext = consistent(&node, &req, ext);
    assert_eq!(
        code_at(&mut c, &req, &ext),
        ("past_stop".into(), Some(k as u32))
    );
    // ... or claimed as length.
    let mut ext_len = ext.clone();
    ext_len.finish_reason = FinishReason::Length;
    let ext_len = consistent(&node, &req, ext_len);
    assert_eq!(
        code_at(&mut c, &req, &ext_len),
        ("past_stop".into(), Some(k as u32))
    );

    // extend past max_tokens: 40 honest tokens for a request of 30.
    let req30 = request(m.id, prompt("hello world"), greedy(30), 3);
    let mut long = free.clone();
    long.request = req30.hash().unwrap();
    let long = consistent(&node, &req30, long);
    assert_eq!(
        code_at(&mut c, &req30, &long),
        ("past_max_tokens".into(), Some(30))
    );

    // truncate: fewer tokens, claimed as length, or keeping the stop claim.
    let mut short = free.clone();
    short.output_tokens.truncate(35);
    let short = consistent(
        &node,
        &request(m.id, prompt("hello world"), greedy(40), 1),
        short,
    );
    assert_eq!(
        code_at(
            &mut c,
            &request(m.id, prompt("hello world"), greedy(40), 1),
            &short
        )
        .0,
        "finish_reason"
    );
    let mut cut = res.clone();
    cut.output_tokens.truncate(k - 1);
    let cut = consistent(&node, &req, cut);
    assert_eq!(code_at(&mut c, &req, &cut).0, "finish_reason");
}

#[test]
fn edited_tokens_are_caught_at_their_position() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut c = checker(&m, 2);
    let vocab = node.model().config.vocab as u32;
    for (i, p) in PROMPTS.iter().enumerate() {
        for d in [greedy(20), sampled(20, 11)] {
            let req = request(m.id, prompt(p), d, i as u8);
            let honest = answer(&mut node, &req);
            for pos in [0usize, 7, 19] {
                let mut bad = honest.clone();
                let t = bad.output_tokens[pos];
                // Another ordinary (non-end) token.
                let mut e = (t + 1) % vocab;
                while node.detokenizer().is_end(e) || e < 3 {
                    e = (e + 1) % vocab;
                }
                bad.output_tokens[pos] = e;
                let bad = consistent(&node, &req, bad);
                assert_eq!(
                    code_at(&mut c, &req, &bad),
                    ("token_mismatch".into(), Some(pos as u32)),
                    "{p:?} pos {pos}"
                );
            }
            // Text that is not the decoding of the tokens.
            let mut text = honest.clone();
            text.output_text.push('!');
            sign(&mut text);
            assert_eq!(code_at(&mut c, &req, &text).0, "text_mismatch");
        }
    }
}

#[test]
fn wrong_seed_and_swapped_model_are_caught_at_the_first_divergence() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut swapped = engine(&m.other, 2);
    let mut c = checker(&m, 2);
    let mut caught = 0;
    let mut swaps = 0;
    for (i, p) in PROMPTS.iter().enumerate() {
        let req = request(m.id, prompt(p), sampled(24, 5 + i as u64), i as u8);
        let honest = answer(&mut node, &req);

        // wrong-seed: sampled with another seed, claimed as this request.
        let mut other_seed = req.clone();
        other_seed.decoding.seed += 1000;
        other_seed.sign(&key(1)).unwrap();
        let mut bad = answer(&mut node, &other_seed);
        bad.request = req.hash().unwrap();
        let bad = consistent(&node, &req, bad);
        if let Some(pos) = first_difference(&honest.output_tokens, &bad.output_tokens) {
            let (code, at) = code_at(&mut c, &req, &bad);
            assert!(
                code == "token_mismatch" && at == Some(pos)
                    || code == "finish_reason"
                    || code == "past_eos",
                "{code} {at:?} vs {pos}"
            );
            caught += 1;
        }

        // swap-model: another model's answer claiming the requested model.
        // (Greedy decoding of random tiny models can agree token for token;
        // an identical answer is not a fault, so only divergent ones count.)
        let flat = Decoding {
            top_k: 0,
            ..sampled(24, 9)
        };
        for d in [greedy(24), flat] {
            let req = request(m.id, prompt(p), d, 50 + i as u8);
            let honest = answer(&mut node, &req);
            let swapped_res = answer(&mut swapped, &req);
            assert_eq!(swapped_res.model, m.id);
            match first_difference(&honest.output_tokens, &swapped_res.output_tokens) {
                Some(pos) => {
                    let (code, at) = code_at(&mut c, &req, &swapped_res);
                    assert_eq!((code.as_str(), at), ("token_mismatch", Some(pos)));
                    swaps += 1;
                }
                None => assert_eq!(rejection(&mut c, &req, &swapped_res), None),
            }
        }
    }
    eprintln!("diverged: {caught} seeds, {swaps} swaps");
    assert!(swaps >= 3, "only {swaps} swapped answers diverged");
    assert!(caught >= 3, "only {caught} seeds diverged");
}

#[test]
fn binding_faults() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut c = checker(&m, 2);
    let req = request(m.id, prompt("hello world"), greedy(12), 1);
    let res = answer(&mut node, &req);

    // replay: an earlier result for a new request.
    let new_req = request(m.id, prompt("hello world"), greedy(12), 2);
    assert_eq!(code_at(&mut c, &new_req, &res).0, "wrong_request");

    let mut wrong_model = res.clone();
    wrong_model.model = Hash::of(b"another model");
    sign(&mut wrong_model);
    assert_eq!(code_at(&mut c, &req, &wrong_model).0, "wrong_model");

    let mut wrong_engine = res.clone();
    wrong_engine.engine = "verinfer-llm/9.9.9/arith-v2".into();
    sign(&mut wrong_engine);
    assert_eq!(code_at(&mut c, &req, &wrong_engine).0, "wrong_engine");

    let mut forged = res.clone();
    forged.output_tokens[0] ^= 1;
    assert_eq!(code_at(&mut c, &req, &forged).0, "bad_signature");

    let mut usage = res.clone();
    usage.usage.prompt_tokens += 1;
    sign(&mut usage);
    assert_eq!(code_at(&mut c, &req, &usage).0, "usage");

    let mut bad_tok = res.clone();
    bad_tok.output_tokens[3] = 100_000;
    sign(&mut bad_tok);
    assert_eq!(
        code_at(&mut c, &req, &bad_tok),
        ("bad_token".into(), Some(3))
    );

    // A JSON-schema policy the random model cannot meet.
    let mut schema_req = req.clone();
    schema_req.policy.json_schema = Some(serde_json::json!({"type": "object"}));
    schema_req.sign(&key(1)).unwrap();
    let mut schema_res = res.clone();
    schema_res.request = schema_req.hash().unwrap();
    sign(&mut schema_res);
    assert_eq!(code_at(&mut c, &schema_req, &schema_res).0, "schema");

    // A request for a model this verifier does not run: no verdict.
    let other_req = request(Hash::of(b"x"), prompt("hello world"), greedy(12), 3);
    assert!(matches!(
        c.check(&other_req, &res),
        Err(CheckError::ModelNotServed { .. })
    ));
}

#[test]
fn verdict_carries_cost_and_positions() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut c = checker(&m, 2);
    let req = request(m.id, prompt("the world"), greedy(64), 1);
    let res = answer(&mut node, &req);
    let outcome = c.check(&req, &res).unwrap();
    assert_eq!(outcome.rejection, None);
    assert_eq!(outcome.checked_positions, 64);
    assert!(outcome.cost_micros > 0);
    let v = outcome.to_verdict(&SecretKey::from_seed(&[7; 32])).unwrap();
    v.verify_signature().unwrap();
    assert_eq!(v.cost_micros, outcome.cost_micros);
    assert_eq!(v.reason, None);
    assert_eq!(v.failed_position, None);
    // verdict.v2 binds the pair: the request checked and the result.
    assert_eq!(v.request, req.hash().unwrap());
    assert_eq!(v.result, res.hash().unwrap());
}

#[test]
fn verdict_v2_binds_the_request_checked() {
    let m = models();
    let mut node = engine(&m.path, 2);
    let mut c = checker(&m, 2);
    let req = request(m.id, prompt("the world"), greedy(8), 1);
    let res = answer(&mut node, &req);
    // An honest result sent with another request: the rejection names that
    // other request, and its code is not the node's fault.
    let other = request(m.id, prompt("the sea"), greedy(8), 2);
    let v = c.verdict(&other, &res).unwrap();
    assert_eq!(v.decision, Decision::Reject);
    assert_eq!(v.request, other.hash().unwrap());
    assert_ne!(v.request, res.request);
    assert!(!v.proves_node_fault(), "{:?}", v.reason);
    // Moving the verdict onto the result's own request breaks its signature.
    let mut moved = v.clone();
    moved.request = res.request;
    assert!(moved.verify_signature().is_err());
    let text = serde_json::to_string(&v).unwrap();
    assert!(text.contains("\"type\":\"verinfer.verdict.v2\""));
    let old = text.replace("verinfer.verdict.v2", "verinfer.verdict.v1");
    assert!(serde_json::from_str::<Verdict>(&old).is_err());
}
