//! Helpers shared by the tests on the real default model.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use verinfer_inference::respond::{falsify, respond, Fault, RespondError};
use verinfer_inference::{models, Engine, EngineOptions};
use verinfer_types::records::{
    Decision, Decoding, InferenceResult, Input, Message, Nonce, Policy, Request, RequestTag,
};
use verinfer_types::testing::key;
use verinfer_types::{Hash, SignedRecord};
use verinfer_verify::checker::Checker;

pub(crate) fn model() -> (std::path::PathBuf, Hash) {
    let path = models::ensure_default_model().unwrap_or_else(|e| {
        panic!("the default model is needed for this test and could not be fetched: {e}")
    });
    let id: Hash = models::file_sha256(&path).unwrap().parse().unwrap();
    (path, id)
}

/// Gemma 3 270M (fetched if not cached) and its id.
pub(crate) fn gemma3_model() -> (std::path::PathBuf, Hash) {
    let path = models::ensure_model(models::GEMMA3_MODEL).unwrap_or_else(|e| {
        panic!("the Gemma 3 model is needed for this test and could not be fetched: {e}")
    });
    let id: Hash = models::file_sha256(&path).unwrap().parse().unwrap();
    (path, id)
}

pub(crate) fn engine(path: &std::path::Path, threads: usize) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            threads,
            force_scalar: false,
        },
    )
    .unwrap()
}

pub(crate) fn request(model: Hash, question: &str, decoding: Decoding, nonce: u8) -> Request {
    let input = Input::Messages(vec![Message {
        role: "user".into(),
        content: question.into(),
    }]);
    request_for(model, input, decoding, nonce)
}

/// A request for any input, signed by the requester `key(1)`.
pub(crate) fn request_for(model: Hash, input: Input, decoding: Decoding, nonce: u8) -> Request {
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

pub(crate) fn decoding(max_tokens: u32, temperature_milli: u32, seed: u64) -> Decoding {
    Decoding {
        temperature_milli,
        top_k: 40,
        top_p_milli: 950,
        seed,
        max_tokens,
        stop: Vec::new(),
        ..Default::default()
    }
}

/// The honest answer of a node running `engine` (signed by `key(2)`).
pub(crate) fn answer(engine: &mut Engine, req: &Request) -> InferenceResult {
    respond(engine, req.model, req, &key(2), &mut |_, _| {}).unwrap()
}

/// `fault` applied to `honest`, the honest answer to `req` (signed by `key(2)`).
pub(crate) fn faulty(
    engine: &mut Engine,
    req: &Request,
    honest: &InferenceResult,
    fault: &Fault,
) -> Result<InferenceResult, RespondError> {
    falsify(engine, req, honest, fault, &key(2))
}

/// A tiny random llama with the default model's tokenizer, written to `dir`
/// (the model a `swap-model` node answers with).
pub(crate) fn swapped_model(original: &Path, dir: &Path) -> PathBuf {
    let bytes = verinfer_verify::testing::same_tokenizer_model(original, 7).unwrap();
    let path = dir.join("swapped.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The first output position where two answers differ.
pub(crate) fn first_difference(a: &[u32], b: &[u32]) -> Option<u32> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .map(|p| p as u32)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len()) as u32))
}

pub(crate) fn rejected(
    c: &mut Checker<Engine>,
    req: &Request,
    res: &InferenceResult,
) -> (String, Option<u32>) {
    let v = c.verdict(req, res).unwrap();
    assert_eq!(v.decision, Decision::Reject);
    let reason = v.reason.unwrap();
    (
        reason.split(':').next().unwrap().to_string(),
        v.failed_position,
    )
}
