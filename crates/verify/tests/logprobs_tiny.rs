#![allow(clippy::unwrap_used)]
//! Log-probabilities, penalties and logit bias, checked by the checker on a
//! tiny synthetic GGUF model: honest results are accepted, every edit of a
//! log-probability or of the list of best tokens is caught, and a node that
//! ignores the penalties or the bias is caught.

use verinfer_inference::respond::{falsify, respond, Fault};
use verinfer_inference::testing::{tiny_model, TinySpec};
use verinfer_inference::{Engine, EngineOptions};
use verinfer_types::records::{
    Decoding, HexBytes, InferenceResult, Input, LogitBias, Nonce, Policy, Request, RequestTag,
};
use verinfer_types::testing::key;
use verinfer_types::{Hash, Record, SignedRecord};
use verinfer_verify::checker::{Checker, Recompute};
use verinfer_verify::rules;

struct Tiny {
    _dir: tempfile::TempDir,
    node: Engine,
    checker: Checker<Engine>,
    id: Hash,
}

fn tiny() -> Tiny {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_model(&TinySpec::default());
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let load = |threads| {
        Engine::load(
            &path,
            EngineOptions {
                threads,
                force_scalar: false,
            },
        )
        .unwrap()
    };
    let id = Hash::of(&bytes);
    Tiny {
        node: load(2),
        checker: Checker::new(load(1), id, key(30)),
        id,
        _dir: dir,
    }
}

fn request(model: Hash, text: &str, decoding: Decoding, nonce: u8) -> Request {
    let k = key(1);
    let mut r = Request {
        tag: RequestTag,
        model,
        input: Input::Prompt(text.to_string()),
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

fn decodings(top: Option<u32>) -> [Decoding; 2] {
    let greedy = Decoding {
        max_tokens: 16,
        top_logprobs: top,
        ..Decoding::default()
    };
    let sampled = Decoding {
        temperature_milli: 4000,
        top_k: 40,
        top_p_milli: 950,
        seed: 5,
        ..greedy.clone()
    };
    [greedy, sampled]
}

/// The reason code and position of the checker's verdict (`None` on accept).
fn verdict(t: &mut Tiny, req: &Request, res: &InferenceResult) -> Option<(String, Option<u32>)> {
    let v = t.checker.verdict(req, res).unwrap();
    v.reason
        .map(|r| (rules::reason_code(&r).to_string(), v.failed_position))
}

/// A named edit of an honest result.
type Edit = (&'static str, fn(&mut InferenceResult));

fn resign(res: &mut InferenceResult) {
    res.sign(&key(2)).unwrap();
}

#[test]
fn honest_log_probabilities_are_accepted() {
    let mut t = tiny();
    for top in [None, Some(0), Some(5), Some(20)] {
        for (i, d) in decodings(top).into_iter().enumerate() {
            let req = request(t.id, "the world or the hell", d, i as u8);
            let res = respond(&mut t.node, t.id, &req, &key(2), &mut |_, _| {}).unwrap();
            match top {
                None => assert!(res.logprobs.is_none()),
                Some(n) => {
                    let lps = res.logprobs.as_ref().unwrap();
                    assert_eq!(lps.len(), res.output_tokens.len());
                    assert!(lps.iter().all(|e| e.top.len() == n as usize));
                    assert!(lps.iter().all(|e| e.logprob_micro <= 0));
                }
            }
            assert_eq!(verdict(&mut t, &req, &res), None, "top {top:?} #{i}");
        }
    }
}

#[test]
fn an_edited_log_probability_is_caught_at_its_position() {
    let mut t = tiny();
    for (i, d) in decodings(Some(5)).into_iter().enumerate() {
        let req = request(t.id, "a b c d e f", d, i as u8);
        let honest = respond(&mut t.node, t.id, &req, &key(2), &mut |_, _| {}).unwrap();
        for pos in [0u32, 3, 15] {
            let bad = falsify(
                &mut t.node,
                &req,
                &honest,
                &Fault::EditLogprob(pos),
                &key(2),
            )
            .unwrap();
            assert_eq!(
                verdict(&mut t, &req, &bad),
                Some(("logprobs".into(), Some(pos)))
            );
        }
        // Edits of the list of best tokens.
        let edits: [Edit; 7] = [
            ("value of a listed token", |r| {
                r.logprobs.as_mut().unwrap()[2].top[1].logprob_micro -= 50
            }),
            ("best token left out", |r| {
                let e = &mut r.logprobs.as_mut().unwrap()[2];
                e.top.remove(0);
                let worst = e.top.last().unwrap().clone();
                e.top.push(worst);
            }),
            ("order", |r| r.logprobs.as_mut().unwrap()[2].top.swap(0, 4)),
            ("bytes", |r| {
                r.logprobs.as_mut().unwrap()[2].bytes = HexBytes(b"zz".to_vec())
            }),
            ("fewer listed", |r| {
                r.logprobs.as_mut().unwrap()[2].top.pop();
            }),
            ("one entry short", |r| {
                r.logprobs.as_mut().unwrap().pop();
            }),
            ("dropped", |r| r.logprobs = None),
        ];
        for (what, edit) in edits {
            let mut bad = honest.clone();
            edit(&mut bad);
            resign(&mut bad);
            let got = verdict(&mut t, &req, &bad);
            assert_eq!(got.map(|g| g.0), Some("logprobs".into()), "{what}");
        }
        // The best token left out for the sixth best, every value true: a
        // list that leaves out a more likely token.
        let mut six = req.decoding.clone();
        six.top_logprobs = Some(6);
        let six = request(t.id, "a b c d e f", six, 100 + i as u8);
        let six = respond(&mut t.node, t.id, &six, &key(2), &mut |_, _| {}).unwrap();
        assert_eq!(six.output_tokens, honest.output_tokens);
        let mut bad = honest.clone();
        let e = &mut bad.logprobs.as_mut().unwrap()[1];
        e.top.remove(0);
        e.top.push(six.logprobs.as_ref().unwrap()[1].top[5].clone());
        resign(&mut bad);
        let (code, pos) = verdict(&mut t, &req, &bad).unwrap();
        assert_eq!((code.as_str(), pos), ("logprobs", Some(1)));
        let reason = t.checker.verdict(&req, &bad).unwrap().reason.unwrap();
        assert!(reason.contains("left out"), "{reason}");
    }
    // Log-probabilities nobody asked for.
    let req = request(t.id, "hello world", decodings(None)[0].clone(), 9);
    let asked = request(t.id, "hello world", decodings(Some(2))[0].clone(), 9);
    let with = respond(&mut t.node, t.id, &asked, &key(2), &mut |_, _| {}).unwrap();
    let mut bad = respond(&mut t.node, t.id, &req, &key(2), &mut |_, _| {}).unwrap();
    bad.logprobs = with.logprobs;
    resign(&mut bad);
    assert_eq!(
        verdict(&mut t, &req, &bad),
        Some(("logprobs".into(), Some(0)))
    );
}

/// Answers `req` as a node that ignores its penalties and bias: the answer
/// to the same request without them, bound to `req`.
fn ignoring_the_rule(t: &mut Tiny, req: &Request) -> InferenceResult {
    let mut plain = req.clone();
    plain.decoding.frequency_penalty_milli = 0;
    plain.decoding.presence_penalty_milli = 0;
    plain.decoding.logit_bias.clear();
    plain.sign(&key(1)).unwrap();
    let mut res = respond(&mut t.node, t.id, &plain, &key(2), &mut |_, _| {}).unwrap();
    res.request = req.hash().unwrap();
    resign(&mut res);
    res
}

#[test]
fn penalties_and_bias_are_part_of_the_decoding_rule() {
    let mut t = tiny();
    let mut caught = 0;
    for (i, base) in decodings(Some(3)).into_iter().enumerate() {
        let plain = request(t.id, "hello hello hello", base.clone(), 40 + i as u8);
        let first = respond(&mut t.node, t.id, &plain, &key(2), &mut |_, _| {})
            .unwrap()
            .output_tokens[0];
        let rules = [
            Decoding {
                frequency_penalty_milli: 2000,
                ..base.clone()
            },
            Decoding {
                presence_penalty_milli: 2000,
                frequency_penalty_milli: -500,
                ..base.clone()
            },
            // Bans the token the plain decoding starts with.
            Decoding {
                logit_bias: vec![LogitBias {
                    token: first,
                    bias_milli: -100_000,
                }],
                ..base.clone()
            },
        ];
        for (k, d) in rules.into_iter().enumerate() {
            let req = request(t.id, "hello hello hello", d, 50 + (i * 3 + k) as u8);
            let honest = respond(&mut t.node, t.id, &req, &key(2), &mut |_, _| {}).unwrap();
            assert_eq!(verdict(&mut t, &req, &honest), None, "rule {k} #{i}");
            let lazy = ignoring_the_rule(&mut t, &req);
            if lazy.output_tokens == honest.output_tokens {
                continue;
            }
            caught += 1;
            let (code, _) = verdict(&mut t, &req, &lazy).unwrap();
            assert_eq!(code, "token_mismatch", "rule {k} #{i}");
        }
    }
    // The bias always changes the output; the penalties on this model do too.
    assert!(caught >= 4, "only {caught} rules changed the output");
}

#[test]
fn the_checker_engine_reports_what_the_node_claims() {
    // The score pass under a logit rule gives the node's very numbers.
    let mut t = tiny();
    let d = Decoding {
        frequency_penalty_milli: 700,
        logit_bias: vec![LogitBias {
            token: 7,
            bias_milli: 2500,
        }],
        ..decodings(Some(4))[1].clone()
    };
    let req = request(t.id, "the world", d, 77);
    let res = respond(&mut t.node, t.id, &req, &key(2), &mut |_, _| {}).unwrap();
    let prompt = t.checker.engine_mut().prompt_tokens(&req.input).unwrap();
    let asked = verinfer_verify::logprobs::asked(&res);
    let scores = Recompute::score(
        t.checker.engine_mut(),
        &prompt,
        &res.output_tokens,
        &req.decoding,
        8,
        &asked,
        req.requester.to_bytes(),
    )
    .unwrap();
    for (e, s) in res.logprobs.as_ref().unwrap().iter().zip(&scores) {
        let lp = s.logprobs.as_ref().unwrap();
        assert_eq!(e.logprob_micro, lp.logprob_micro);
        let claimed: Vec<(u32, i64)> = e.top.iter().map(|c| (c.token, c.logprob_micro)).collect();
        assert_eq!(claimed, lp.top);
        assert_eq!(claimed, s.asked);
    }
}
