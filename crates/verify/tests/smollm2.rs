#![allow(clippy::unwrap_used)]
//! The checker on the real default model (SmolLM2-135M-Instruct, Q4_1):
//! every fault of `verinfer_inference::respond::Fault` rejected with the
//! right reason and first position, on several prompts, greedy and sampled;
//! and honest answers never rejected.
//!
//! The model is fetched if it is not cached (as for the inference crate's
//! model tests).

mod smol;

use std::collections::BTreeMap;

use smol::*;
use verinfer_inference::respond::{Fault, RespondError};
use verinfer_types::records::{Decision, FinishReason};
use verinfer_types::testing::key;
use verinfer_types::SignedRecord;
use verinfer_verify::checker::Checker;

/// Prompts of the matrix, with the stop sequences of their requests: the
/// endings differ (end token, stop sequence, `max_tokens`), so `extend` runs
/// past each kind of ending.
const CASES: [(&str, &[&str]); 4] = [
    ("Write one sentence about the sea.", &[]),
    ("Name three colours.", &[","]),
    ("What is 2 + 2? Answer with one word.", &[]),
    ("List the days of the week.", &["\n"]),
];

/// The adversarial matrix: for each prompt, greedy and sampled, the honest
/// answer is accepted and each fault kind is rejected with the reason code
/// (and first failing position) the rules give for it.
#[test]
fn every_fault_kind_is_rejected_with_the_right_reason() {
    let (path, id) = model();
    let seen = fault_matrix(&path, id, &CASES);
    for code in ["past_eos", "past_stop", "past_max_tokens"] {
        assert!(
            seen.contains_key(&("extend".to_string(), code.to_string())),
            "no prompt made extend run past with {code}"
        );
    }
}

/// The same matrix on Gemma 3 270M (sliding-window attention, k-quants,
/// SentencePiece), on the prompts without stop sequences: an edited token
/// of this vocabulary may hold the stop string, which the rules then reject
/// as `past_stop` first. The pretrained model rarely ends a turn, so its
/// answers need not run past every kind of ending.
#[test]
fn every_fault_kind_is_rejected_on_gemma3() {
    let (path, id) = gemma3_model();
    let cases: Vec<_> = CASES.into_iter().filter(|c| c.1.is_empty()).collect();
    let seen = fault_matrix(&path, id, &cases);
    assert!(seen.contains_key(&("extend".to_string(), "past_max_tokens".to_string())));
}

/// Runs the matrix on the model at `path` (id `id`); returns how often each
/// (fault kind, reason code) was seen.
fn fault_matrix(
    path: &std::path::Path,
    id: verinfer_types::Hash,
    cases: &[(&str, &[&str])],
) -> BTreeMap<(String, String), u32> {
    let path = path.to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let swapped = swapped_model(&path, dir.path());
    let mut node = engine(&path, 2);
    let mut c = Checker::new(engine(&path, 2), id, key(30));
    // How often each (fault, code) was seen, to show every ending was run past.
    let mut seen: BTreeMap<(String, String), u32> = BTreeMap::new();
    let max_tokens = 20;
    for (i, (q, stop)) in cases.iter().enumerate() {
        for (j, temperature) in [0u32, 800].into_iter().enumerate() {
            let mut d = decoding(max_tokens, temperature, 100 + i as u64);
            d.stop = stop.iter().map(|s| s.to_string()).collect();
            let nonce = (2 * i + j) as u8;
            let req = request(id, q, d, nonce);
            let honest = answer(&mut node, &req);
            let v = c.verdict(&req, &honest).unwrap();
            assert_eq!(v.decision, Decision::Accept, "{q}: {:?}", v.reason);
            let n = honest.output_tokens.len() as u32;
            let case = format!(
                "{q:?} t={temperature} ({n} tokens, {:?})",
                honest.finish_reason
            );
            eprintln!("{case}: {:?}", honest.output_text);
            assert!(n >= 4, "{case}: too short for the matrix");
            let mut expect = |fault: Fault, code: &str, at: Option<u32>| {
                let bad = faulty(&mut node, &req, &honest, &fault)
                    .unwrap_or_else(|e| panic!("{case}: {fault}: {e}"));
                bad.verify_signature().unwrap();
                assert_ne!(bad, honest, "{case}: {fault} gave the honest answer");
                let got = rejected(&mut c, &req, &bad);
                assert_eq!(got, (code.to_string(), at), "{case}: {fault}");
                let kind = fault.to_string();
                let kind = kind.split(':').next().unwrap().to_string();
                *seen.entry((kind, code.to_string())).or_default() += 1;
            };

            // edit-token: first, middle and next-to-last positions (the last
            // may be the end token, whose edit is a finish_reason fault).
            for pos in [0, n / 2, n - 2] {
                expect(Fault::EditToken(pos), "token_mismatch", Some(pos));
            }
            // truncate: stopping early is never a valid ending.
            expect(Fault::Truncate(1), "finish_reason", None);
            expect(Fault::Truncate(n / 2), "finish_reason", None);
            // extend: the first rule broken, in rule order.
            for more in [1, 3] {
                let (code, at) = if n + more > max_tokens {
                    ("past_max_tokens", Some(max_tokens))
                } else {
                    match honest.finish_reason {
                        FinishReason::Eos => ("past_eos", Some(n)),
                        FinishReason::Stop => ("past_stop", Some(n)),
                        FinishReason::Length => unreachable!("{case}: length below max"),
                    }
                };
                expect(Fault::Extend(more), code, at);
            }
            // wrong-seed: sampled requests only; a greedy answer has no seed.
            if temperature > 0 {
                let ws = faulty(&mut node, &req, &honest, &Fault::WrongSeed).unwrap();
                let at = first_difference(&honest.output_tokens, &ws.output_tokens).unwrap();
                assert_eq!(
                    rejected(&mut c, &req, &ws),
                    ("token_mismatch".to_string(), Some(at)),
                    "{case}: wrong-seed"
                );
                *seen
                    .entry(("wrong-seed".into(), "token_mismatch".into()))
                    .or_default() += 1;
            } else {
                assert!(matches!(
                    faulty(&mut node, &req, &honest, &Fault::WrongSeed),
                    Err(RespondError::Fault { .. })
                ));
            }
            // swap-model: a model with the same tokenizer; caught where its
            // answer first departs from the requested model's.
            let sw = faulty(&mut node, &req, &honest, &Fault::SwapModel(swapped.clone())).unwrap();
            let at = first_difference(&honest.output_tokens, &sw.output_tokens)
                .expect("the random model answers differently");
            assert_eq!(
                rejected(&mut c, &req, &sw),
                ("token_mismatch".to_string(), Some(at)),
                "{case}: swap-model"
            );
            *seen
                .entry(("swap-model".into(), "token_mismatch".into()))
                .or_default() += 1;
            // replay: this very (correct) answer, for a new request with the
            // same question; the Result is returned unchanged.
            let file = dir.path().join(format!("earlier-{nonce}.json"));
            std::fs::write(
                &file,
                serde_json::to_vec(&serde_json::json!({"request": req, "result": honest})).unwrap(),
            )
            .unwrap();
            let new_req = request(id, q, req.decoding.clone(), 100 + nonce);
            let replayed = faulty(&mut node, &new_req, &honest, &Fault::Replay(file)).unwrap();
            assert_eq!(replayed, honest);
            assert_eq!(
                rejected(&mut c, &new_req, &replayed),
                ("wrong_request".to_string(), None)
            );
            *seen
                .entry(("replay".into(), "wrong_request".into()))
                .or_default() += 1;
        }
    }
    eprintln!("faults caught (kind, code): {seen:?}");
    seen
}

/// The zero-false-rejection run: 200 honest requests (greedy and
/// sampled, nodes and verifiers on 1, 2 and 4 threads) are all accepted.
/// 12 tokens each, to bound its cost in the normal suite.
#[test]
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

/// Node and verifier log-probabilities on the default model: the node
/// answers four requests in one batch on the SIMD kernels, the verifier
/// recomputes on the portable scalar kernels with another thread count. The
/// largest difference is printed (docs/benchmarks.md records it) and must be
/// within the verifiers' bound; an edited value is caught.
#[test]
fn log_probabilities_match_the_verifiers_and_an_edit_is_caught() {
    use verinfer_inference::respond::respond_batch;
    use verinfer_inference::EngineOptions;
    use verinfer_verify::checker::Recompute;
    use verinfer_verify::logprobs::{asked, check_logprobs, LOGPROB_BOUND_MICRO};

    let (path, id) = model();
    let mut node = engine(&path, 2);
    let scalar = verinfer_inference::Engine::load(
        &path,
        EngineOptions {
            threads: 1,
            force_scalar: true,
        },
    )
    .unwrap();
    let mut c = Checker::new(scalar, id, key(30));
    let questions = [
        "Count from one to forty in words.",
        "Tell a short story about a lighthouse keeper.",
        "List ten fruits, one per line.",
        "Explain how a bicycle works.",
    ];
    let requests: Vec<_> = questions
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut d = decoding(80, if i % 2 == 0 { 0 } else { 700 }, i as u64);
            d.top_logprobs = Some(20);
            request(id, q, d, 120 + i as u8)
        })
        .collect();
    type Sink = Box<dyn FnMut(u32, &str)>;
    let mut sinks: Vec<Sink> = requests
        .iter()
        .map(|_| Box::new(|_: u32, _: &str| {}) as Sink)
        .collect();
    let cbs = sinks
        .iter_mut()
        .map(|b| b.as_mut() as verinfer_inference::engine::TokenCallback<'_>)
        .collect();
    let results = respond_batch(&mut node, id, &requests, &key(2), cbs);
    let (mut positions, mut values, mut max_diff) = (0usize, 0usize, 0i64);
    for (req, res) in requests.iter().zip(&results) {
        let res = res.as_ref().unwrap();
        let prompt = c.engine_mut().prompt_tokens(&req.input).unwrap();
        let scores = Recompute::score(
            c.engine_mut(),
            &prompt,
            &res.output_tokens,
            &req.decoding,
            8,
            &asked(res),
            req.requester.to_bytes(),
        )
        .unwrap();
        let tok = c.engine_mut().detokenizer();
        check_logprobs(&req.decoding, res, &scores, tok).unwrap();
        for (e, s) in res.logprobs.as_ref().unwrap().iter().zip(&scores) {
            let lp = s.logprobs.as_ref().unwrap();
            positions += 1;
            values += 1 + e.top.len();
            max_diff = max_diff.max((e.logprob_micro - lp.logprob_micro).abs());
            for (c, r) in e.top.iter().zip(&s.asked) {
                max_diff = max_diff.max((c.logprob_micro - r.1).abs());
            }
        }
    }
    println!(
        "log-probabilities: largest |node - verifier| = {max_diff} micro-nats over {positions} \
         positions ({values} values)"
    );
    assert!(positions >= 200, "only {positions} positions");
    assert!(max_diff <= LOGPROB_BOUND_MICRO);
    // The whole check accepts the honest answer and catches an edit.
    let (req, honest) = (&requests[2], results[2].as_ref().unwrap());
    let v = c.verdict(req, honest).unwrap();
    assert_eq!(v.decision, Decision::Accept, "{:?}", v.reason);
    let bad = faulty(&mut node, req, honest, &Fault::EditLogprob(2)).unwrap();
    assert_eq!(rejected(&mut c, req, &bad), ("logprobs".into(), Some(2)));
}
