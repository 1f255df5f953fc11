#![allow(clippy::unwrap_used)]
//! The checker on the real default model (SmolLM2-135M-Instruct, Q4_1):
//! honest answers accepted, dishonest ones rejected with the right reason and
//! first position.
//!
//! The model is fetched if it is not cached (as for the inference crate's
//! model tests).

mod smol;

use smol::*;
use verinfer_types::fixtures::key;
use verinfer_types::records::{Decision, FinishReason};
use verinfer_types::Record;
use verinfer_verify::checker::Checker;

const QUESTIONS: [&str; 3] = [
    "Write one sentence about the sea.",
    "Name three colours.",
    "What is 2 + 2? Answer in a sentence.",
];

#[test]
fn honest_accepted_and_faults_rejected_on_the_real_model() {
    let (path, id) = model();
    let mut node = engine(&path, 2);
    let mut c = Checker::new(engine(&path, 2), id, key(30));
    for (i, q) in QUESTIONS.iter().enumerate() {
        for d in [decoding(24, 0, 0), decoding(24, 800, 100 + i as u64)] {
            let req = request(id, q, d, i as u8);
            let honest = answer(&mut node, &req);
            let v = c.verdict(&req, &honest).unwrap();
            assert_eq!(v.decision, Decision::Accept, "{q}: {:?}", v.reason);

            // edit-token at 3.
            let mut bad = honest.clone();
            bad.output_tokens[3] = if bad.output_tokens[3] == 1000 {
                1001
            } else {
                1000
            };
            let bad = resign(&node, &req, bad);
            assert_eq!(
                rejected(&mut c, &req, &bad),
                ("token_mismatch".into(), Some(3))
            );

            // truncate by 4, claimed as length.
            let mut short = honest.clone();
            short.output_tokens.truncate(honest.output_tokens.len() - 4);
            short.finish_reason = FinishReason::Length;
            let short = resign(&node, &req, short);
            assert_eq!(rejected(&mut c, &req, &short).0, "finish_reason");

            // wrong-seed (sampled requests only).
            if req.decoding.temperature_milli > 0 {
                let mut other = req.clone();
                other.decoding.seed += 7;
                let mut ws = answer(&mut node, &other);
                ws.request = req.hash().unwrap();
                let ws = resign(&node, &req, ws);
                let first = honest
                    .output_tokens
                    .iter()
                    .zip(&ws.output_tokens)
                    .position(|(a, b)| a != b);
                if let Some(p) = first {
                    let (code, at) = rejected(&mut c, &req, &ws);
                    assert_eq!(code, "token_mismatch");
                    assert_eq!(at, Some(p as u32));
                }
            }
        }
    }
}

/// Issue 4's zero-false-rejection run: 200 honest requests (greedy and
/// sampled, nodes and verifiers on 1, 2 and 4 threads) are all accepted.
/// Minutes of CPU: run with `--ignored`.
#[test]
#[ignore = "slow: 200 real-model requests"]
fn zero_false_rejections_over_200_honest_requests() {
    let (path, id) = model();
    let threads = [1usize, 2, 4];
    let mut nodes: Vec<_> = threads.iter().map(|&t| engine(&path, t)).collect();
    let mut checkers: Vec<_> = threads
        .iter()
        .map(|&t| Checker::new(engine(&path, t), id, key(30)))
        .collect();
    let topics = [
        "the sea",
        "a cat",
        "bread",
        "rain",
        "mountains",
        "a train",
        "music",
        "winter",
        "a garden",
        "the moon",
    ];
    let mut accepted = 0;
    for i in 0..200usize {
        let q = format!(
            "Write one short sentence about {}.",
            topics[i % topics.len()]
        );
        let temperature = if i % 2 == 0 {
            0
        } else {
            700 + (i % 5) as u32 * 100
        };
        let req = request(id, &q, decoding(12, temperature, i as u64), (i % 251) as u8);
        let res = answer(&mut nodes[i % 3], &req);
        let v = checkers[(i / 3) % 3].verdict(&req, &res).unwrap();
        assert_eq!(v.decision, Decision::Accept, "request {i}: {:?}", v.reason);
        accepted += 1;
    }
    assert_eq!(accepted, 200);
}
