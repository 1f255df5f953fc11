//! Helpers shared by the tests on the real default model.
#![allow(dead_code, clippy::unwrap_used)]

use verinfer_inference::{models, Engine, EngineOptions, GenerateParams, SamplingParams};
use verinfer_types::fixtures::key;
use verinfer_types::records::{
    Decision, Decoding, FinishReason, InferenceResult, Input, Message, Nonce, Policy, Request,
    RequestTag, ResultTag, Usage,
};
use verinfer_types::{Hash, Record, SignedRecord};
use verinfer_verify::checker::{Checker, Recompute};
use verinfer_verify::rules;

pub fn model() -> (std::path::PathBuf, Hash) {
    let path = models::ensure_default_model().unwrap_or_else(|e| {
        panic!("the default model is needed for this test and could not be fetched: {e}")
    });
    let id: Hash = models::file_sha256(&path).unwrap().parse().unwrap();
    (path, id)
}

pub fn engine(path: &std::path::Path, threads: usize) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            threads,
            force_scalar: false,
        },
    )
    .unwrap()
}

pub fn request(model: Hash, question: &str, decoding: Decoding, nonce: u8) -> Request {
    let k = key(1);
    let mut r = Request {
        tag: RequestTag,
        model,
        input: Input::Messages(vec![Message {
            role: "user".into(),
            content: question.into(),
        }]),
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

pub fn decoding(max_tokens: u32, temperature_milli: u32, seed: u64) -> Decoding {
    Decoding {
        temperature_milli,
        top_k: 40,
        top_p_milli: 950,
        seed,
        max_tokens,
        stop: Vec::new(),
    }
}

pub fn answer(engine: &mut Engine, req: &Request) -> InferenceResult {
    let prompt = engine.prompt_tokens(&req.input).unwrap();
    let d = &req.decoding;
    let params = GenerateParams {
        max_tokens: d.max_tokens,
        sampling: SamplingParams {
            temperature_milli: d.temperature_milli,
            top_k: d.top_k,
            top_p_milli: d.top_p_milli,
            seed: d.seed,
        },
        stop: d.stop.clone(),
    };
    let g = engine.generate(&prompt, &params, &mut |_, _| {}).unwrap();
    let mut res = InferenceResult {
        tag: ResultTag,
        request: req.hash().unwrap(),
        model: req.model,
        engine: verinfer_inference::ENGINE_VERSION.to_string(),
        output_tokens: g.tokens,
        output_text: g.text,
        finish_reason: match g.finish_reason {
            verinfer_inference::FinishReason::Eos => FinishReason::Eos,
            verinfer_inference::FinishReason::Stop => FinishReason::Stop,
            verinfer_inference::FinishReason::Length => FinishReason::Length,
        },
        usage: Usage {
            prompt_tokens: g.usage.prompt_tokens,
            completion_tokens: g.usage.completion_tokens,
        },
        node: key(2).public(),
        signature: Default::default(),
    };
    res.sign(&key(2)).unwrap();
    res
}

pub fn resign(engine: &Engine, req: &Request, mut res: InferenceResult) -> InferenceResult {
    res.output_text = rules::expected_text(
        &res.output_tokens,
        res.finish_reason,
        &req.decoding.stop,
        engine.detokenizer(),
    )
    .unwrap();
    res.usage.completion_tokens = res.output_tokens.len() as u32;
    res.sign(&key(2)).unwrap();
    res
}

pub fn rejected(
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
