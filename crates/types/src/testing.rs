//! Deterministic sample records for tests across the workspace (feature
//! `testing`). Keys come from fixed seeds so hashes are reproducible.

use crate::records::*;
use crate::{Hash, SecretKey, SignedRecord};

/// A key from a one-byte seed pattern.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_seed(&[seed; 32])
}

/// A signed request for `model` by requester `key(1)`.
pub fn request(model: Hash) -> Request {
    let requester = key(1);
    let mut r = Request {
        tag: RequestTag,
        model,
        input: Input::Messages(vec![
            Message {
                role: "system".into(),
                content: "You are concise.".into(),
            },
            Message {
                role: "user".into(),
                content: "What is the capital of France? \u{1f1eb}\u{1f1f7}".into(),
            },
        ]),
        decoding: Decoding {
            temperature_milli: 700,
            top_k: 40,
            top_p_milli: 950,
            seed: 42,
            max_tokens: 64,
            stop: vec!["\n\n".into()],
            ..Decoding::default()
        },
        policy: Policy::default(),
        requester: requester.public(),
        nonce: Nonce([0xab; 16]),
        signer: requester.public(),
        signature: Default::default(),
    };
    r.sign(&requester).expect("fixture key is the signer");
    r
}

/// A result for `req` signed by node `key(2)`.
pub fn result(req: &Request) -> InferenceResult {
    let node = key(2);
    let mut r = InferenceResult {
        tag: ResultTag,
        request: req.hash().expect("fixture encodes"),
        model: req.model,
        engine: "verinfer-llm/0.1.0".into(),
        output_tokens: vec![504, 3575, 282, 4649, 314, 7042, 30, 2],
        output_text: "The capital of France is Paris.".into(),
        finish_reason: FinishReason::Eos,
        usage: Usage {
            prompt_tokens: 31,
            completion_tokens: 8,
        },
        logprobs: None,
        node: node.public(),
        signature: Default::default(),
    };
    r.sign(&node).expect("fixture key is the signer");
    r
}

/// An accepting verdict on `res` by verifier `key(seed)`.
pub fn verdict(res: &InferenceResult, seed: u8) -> Verdict {
    let k = key(seed);
    let mut v = Verdict {
        tag: VerdictTag,
        request: res.request,
        result: res.hash().expect("fixture encodes"),
        decision: Decision::Accept,
        reason: None,
        failed_position: None,
        checked_positions: res.output_tokens.len() as u32,
        cost_micros: 1234,
        verifier: k.public(),
        signature: Default::default(),
    };
    v.sign(&k).expect("fixture key is the signer");
    v
}

/// A full receipt with a two-verdict certificate.
pub fn receipt() -> Receipt {
    let req = request(Hash::of(b"model"));
    let res = result(&req);
    let verdicts = vec![verdict(&res, 3), verdict(&res, 4)];
    Receipt {
        tag: ReceiptTag,
        certificate: Certificate {
            tag: CertificateTag,
            result: res.hash().expect("fixture encodes"),
            verdicts,
        },
        request: req,
        result: res,
        fees: Fees {
            total: Amount(1_000_000_000_000_000_000_000),
            node: Amount(700_000_000_000_000_000_000),
            verifiers: Amount(200_000_000_000_000_000_000),
            treasury: Amount(100_000_000_000_000_000_000),
            publisher: None,
        },
        salt: Salt([0x5a; 32]),
    }
}
