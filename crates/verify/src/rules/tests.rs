//! Unit tests of the rules, on a hand-made vocabulary.

use super::*;
use verinfer_inference::Candidate;
use verinfer_types::records::{Policy, Usage};
use verinfer_types::testing;
use verinfer_types::SecretKey;

/// 0 = end token, 1 "a", 2 "b", 3 "\n", 4 "c", 5 and 6 the two bytes of
/// "é", 7 "ab", 8 a control token (no bytes, not an end).
struct Toy;

const EOS: u32 = 0;

impl Detokenizer for Toy {
    fn vocab_size(&self) -> usize {
        9
    }
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        Some(match id {
            0 | 8 => vec![],
            1 => b"a".to_vec(),
            2 => b"b".to_vec(),
            3 => b"\n".to_vec(),
            4 => b"c".to_vec(),
            5 => vec![0xc3],
            6 => vec![0xa9],
            7 => b"ab".to_vec(),
            _ => return None,
        })
    }
    fn is_end(&self, id: u32) -> bool {
        id == EOS
    }
}

const ENGINE: &str = "verinfer-llm/0.1.0/arith-v2";

fn ctx(prompt_tokens: u32, context_len: u32) -> Context<'static> {
    Context {
        engine_version: ENGINE,
        prompt_tokens,
        context_len,
    }
}

fn decoding(max_tokens: u32, stop: &[&str]) -> Decoding {
    Decoding {
        max_tokens,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        ..Decoding::default()
    }
}

/// An unsigned result (termination and text rules do not look at signatures).
fn res(tokens: &[u32], text: &str, finish: FinishReason) -> InferenceResult {
    let req = testing::request(Hash::of(b"model"));
    let mut r = testing::result(&req);
    r.output_tokens = tokens.to_vec();
    r.output_text = text.to_string();
    r.finish_reason = finish;
    r
}

fn term(d: &Decoding, tokens: &[u32], finish: FinishReason) -> Result<(), Rejection> {
    check_termination(d, &res(tokens, "", finish), &ctx(5, 1000), &Toy)
}

fn code(r: Result<(), Rejection>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn codes_and_positions_are_stable() {
    let r = Rejection::TokenMismatch {
        position: 3,
        claimed: 1,
        expected: 2,
    };
    assert_eq!(r.code(), "token_mismatch");
    assert_eq!(r.position(), Some(3));
    assert!(r.to_string().starts_with("token_mismatch: "));
    let r = Rejection::PastMaxTokens {
        tokens: 5,
        limit: 4,
    };
    assert_eq!((r.code(), r.position()), ("past_max_tokens", Some(4)));
    let r = Rejection::WrongModel {
        claimed: Hash::default(),
        expected: Hash::default(),
    };
    assert_eq!((r.code(), r.position()), ("wrong_model", None));
    assert!(r.to_string().starts_with("wrong_model: "));
    assert_eq!(reason_code(&r.to_string()), "wrong_model");
    assert_eq!(reason_code("schema"), "schema");
}

#[test]
fn node_faults_are_the_protocol_list() {
    let h = Hash::default();
    let faults = [
        Rejection::TokenMismatch {
            position: 0,
            claimed: 1,
            expected: 2,
        },
        Rejection::BadToken {
            position: 0,
            token: 9,
        },
        Rejection::PastMaxTokens {
            tokens: 5,
            limit: 4,
        },
        Rejection::PastEos {
            eos_at: 0,
            position: 1,
        },
        Rejection::PastStop {
            stop_at: 0,
            position: 1,
        },
        Rejection::FinishReason {
            claimed: FinishReason::Eos,
            detail: String::new(),
        },
        Rejection::TextMismatch { byte: 0 },
        Rejection::OutsideMask {
            position: 0,
            token: 0,
        },
        Rejection::Usage {
            claimed_prompt: 1,
            claimed_completion: 1,
            prompt: 2,
            completion: 1,
        },
        Rejection::WrongModel {
            claimed: h,
            expected: h,
        },
        Rejection::Logprobs {
            position: 0,
            detail: String::new(),
        },
    ];
    let not = [
        Rejection::BadSignature { record: "result" },
        Rejection::BadRequest {
            detail: String::new(),
        },
        Rejection::WrongRequest {
            claimed: h,
            actual: h,
        },
        Rejection::WrongEngine {
            claimed: String::new(),
            expected: String::new(),
        },
        Rejection::Schema {
            detail: String::new(),
        },
    ];
    assert!(faults.iter().all(Rejection::is_node_fault));
    assert!(!not.iter().any(Rejection::is_node_fault));
    let mut listed: Vec<_> = faults.iter().map(Rejection::code).collect();
    listed.sort_unstable();
    let mut protocol = NODE_FAULT_CODES.to_vec();
    protocol.sort_unstable();
    assert_eq!(listed, protocol);
}

#[test]
fn eos_only_as_the_last_token() {
    let d = decoding(10, &[]);
    assert_eq!(code(term(&d, &[1, 2, EOS], FinishReason::Eos)), "ok");
    assert_eq!(
        term(&d, &[1, EOS, 2], FinishReason::Eos),
        Err(Rejection::PastEos {
            eos_at: 1,
            position: 2
        })
    );
    assert_eq!(code(term(&d, &[1, 2], FinishReason::Eos)), "finish_reason");
    assert_eq!(code(term(&d, &[], FinishReason::Eos)), "finish_reason");
    // An end token claimed as length or stop.
    assert_eq!(
        code(term(&d, &[1, EOS], FinishReason::Length)),
        "finish_reason"
    );
    assert_eq!(
        code(term(&d, &[1, EOS], FinishReason::Stop)),
        "finish_reason"
    );
    // A control token that is not an end token ends nothing.
    assert_eq!(code(term(&d, &[1, 8, 2, EOS], FinishReason::Eos)), "ok");
    // EOS on the last allowed token is still eos.
    assert_eq!(
        code(term(&decoding(3, &[]), &[1, 2, EOS], FinishReason::Eos)),
        "ok"
    );
}

#[test]
fn stop_exactly_at_the_first_occurrence() {
    let d = decoding(10, &["b"]);
    assert_eq!(code(term(&d, &[1, 2], FinishReason::Stop)), "ok");
    assert_eq!(
        term(&d, &[1, 2, 4], FinishReason::Stop),
        Err(Rejection::PastStop {
            stop_at: 1,
            position: 2
        })
    );
    assert_eq!(
        term(&d, &[1, 2, 4, EOS], FinishReason::Eos),
        Err(Rejection::PastStop {
            stop_at: 1,
            position: 2
        })
    );
    assert_eq!(code(term(&d, &[1, 4], FinishReason::Stop)), "finish_reason");
    // A stop sequence spread over tokens.
    let d = decoding(10, &["a\nb"]);
    assert_eq!(code(term(&d, &[4, 1, 3, 2], FinishReason::Stop)), "ok");
    assert_eq!(
        term(&d, &[1, 3, 2, 4], FinishReason::Stop),
        Err(Rejection::PastStop {
            stop_at: 2,
            position: 3
        })
    );
    // Completed inside a multi-character token.
    let d = decoding(10, &["\na"]);
    assert_eq!(
        term(&d, &[3, 7, 4], FinishReason::Stop),
        Err(Rejection::PastStop {
            stop_at: 1,
            position: 2
        })
    );
    // Inside one token, and found across a multi-byte character.
    let d = decoding(10, &["é"]);
    assert_eq!(code(term(&d, &[1, 5, 6], FinishReason::Stop)), "ok");
    assert_eq!(
        code(term(&d, &[1, 5, 6, 1], FinishReason::Stop)),
        "past_stop"
    );
    assert_eq!(code(term(&d, &[1, 5], FinishReason::Stop)), "finish_reason");
    // Empty stop strings are ignored.
    let d = decoding(2, &[""]);
    assert_eq!(code(term(&d, &[1, 2], FinishReason::Length)), "ok");
    // A stop reached on the last allowed token is a stop, not a length.
    let d = decoding(2, &["b"]);
    assert_eq!(code(term(&d, &[1, 2], FinishReason::Stop)), "ok");
    assert_eq!(
        code(term(&d, &[1, 2], FinishReason::Length)),
        "finish_reason"
    );
}

#[test]
fn length_only_at_the_limit() {
    let d = decoding(3, &[]);
    assert_eq!(code(term(&d, &[1, 2, 4], FinishReason::Length)), "ok");
    assert_eq!(
        code(term(&d, &[1, 2], FinishReason::Length)),
        "finish_reason"
    );
    assert_eq!(
        term(&d, &[1, 2, 4, 1], FinishReason::Length),
        Err(Rejection::PastMaxTokens {
            tokens: 4,
            limit: 3
        })
    );
    assert_eq!(
        code(term(&decoding(0, &[]), &[], FinishReason::Length)),
        "ok"
    );
    // The context window also limits: 8 prompt tokens in a window of 10.
    let r = |tokens: &[u32]| {
        check_termination(
            &decoding(5, &[]),
            &res(tokens, "", FinishReason::Length),
            &ctx(8, 10),
            &Toy,
        )
    };
    assert_eq!(code(r(&[1, 2])), "ok");
    assert_eq!(code(r(&[1, 2, 4])), "past_max_tokens");
    assert_eq!(code(r(&[1])), "finish_reason");
}

#[test]
fn text_is_the_decoding() {
    let d = decoding(10, &["\n"]);
    let t = |tokens: &[u32], text: &str, f| check_text(&d, &res(tokens, text, f), &Toy);
    assert_eq!(code(t(&[1, 7, EOS], "aab", FinishReason::Eos)), "ok");
    assert_eq!(
        t(&[1, 7, EOS], "abb", FinishReason::Eos),
        Err(Rejection::TextMismatch { byte: 1 })
    );
    assert_eq!(
        t(&[1, 7, EOS], "aa", FinishReason::Eos),
        Err(Rejection::TextMismatch { byte: 2 })
    );
    // Cut before the stop sequence.
    assert_eq!(code(t(&[1, 2, 3], "ab", FinishReason::Stop)), "ok");
    assert_eq!(
        code(t(&[1, 2, 3], "ab\n", FinishReason::Stop)),
        "text_mismatch"
    );
    // A split character decodes lossily, as generation does.
    assert_eq!(code(t(&[1, 5], "a\u{fffd}", FinishReason::Length)), "ok");
    assert_eq!(code(t(&[5, 6], "é", FinishReason::Length)), "ok");
    assert_eq!(
        expected_text(&[1, 3, 2, 3, 4], FinishReason::Stop, &["b\n".into()], &Toy),
        Ok("a\n".to_string())
    );
}

#[test]
fn token_ids_must_be_in_the_vocabulary() {
    assert_eq!(code(check_token_range(&[1, 2, 8], 9)), "ok");
    assert_eq!(
        check_token_range(&[1, 9, 2, 100], 9),
        Err(Rejection::BadToken {
            position: 1,
            token: 9
        })
    );
}

fn signed_pair() -> (Request, InferenceResult) {
    let req = testing::request(Hash::of(b"model"));
    let mut res = testing::result(&req);
    res.engine = ENGINE.into();
    res.sign(&testing::key(2)).unwrap_or_else(|e| panic!("{e}"));
    (req, res)
}

fn resign(res: &mut InferenceResult) {
    res.sign(&testing::key(2)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn signatures_and_binding() {
    let (req, res) = signed_pair();
    assert_eq!(code(check_signatures(&req, &res)), "ok");
    assert_eq!(code(check_binding(&req, &res, ENGINE)), "ok");

    let mut forged = res.clone();
    forged.output_text.push('!');
    assert_eq!(
        check_signatures(&req, &forged),
        Err(Rejection::BadSignature { record: "result" })
    );
    // Claiming another node without its signature.
    let mut other_signer = res.clone();
    other_signer.node = SecretKey::from_seed(&[9; 32]).public();
    assert_eq!(code(check_signatures(&req, &other_signer)), "bad_signature");

    let mut bad_req = req.clone();
    bad_req.decoding.seed += 1;
    assert_eq!(
        check_signatures(&bad_req, &res),
        Err(Rejection::BadSignature { record: "request" })
    );

    // A replay: the same signed result checked against another request.
    let mut other = req.clone();
    other.nonce.0[0] ^= 1;
    other
        .sign(&testing::key(1))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(code(check_signatures(&other, &res)), "ok");
    assert_eq!(code(check_binding(&other, &res, ENGINE)), "wrong_request");

    let mut wrong_model = res.clone();
    wrong_model.model = Hash::of(b"other model");
    resign(&mut wrong_model);
    assert_eq!(
        code(check_binding(&req, &wrong_model, ENGINE)),
        "wrong_model"
    );

    let mut wrong_engine = res.clone();
    wrong_engine.engine = "verinfer-llm/0.0.9/arith-v0".into();
    resign(&mut wrong_engine);
    assert_eq!(
        code(check_binding(&req, &wrong_engine, ENGINE)),
        "wrong_engine"
    );
}

#[test]
fn usage_counts_tokens() {
    let (_, mut res) = signed_pair();
    let n = res.output_tokens.len() as u32;
    res.usage = Usage {
        prompt_tokens: 31,
        completion_tokens: n,
    };
    assert_eq!(code(check_usage(&res, 31)), "ok");
    assert_eq!(code(check_usage(&res, 30)), "usage");
    res.usage.completion_tokens += 1;
    assert_eq!(code(check_usage(&res, 31)), "usage");
}

fn with_schema(schema: serde_json::Value) -> Request {
    let mut req = testing::request(Hash::of(b"model"));
    req.policy = Policy {
        json_schema: Some(schema),
        ..Policy::default()
    };
    req
}

#[test]
fn schema_when_the_policy_asks() {
    let req = testing::request(Hash::of(b"model"));
    assert_eq!(code(check_schema(&req, "not json at all")), "ok");
    let req = with_schema(serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"]
    }));
    assert_eq!(code(check_schema(&req, r#"{"city": "Paris"}"#)), "ok");
    assert_eq!(code(check_schema(&req, r#"{"city": 7}"#)), "schema");
    assert_eq!(code(check_schema(&req, "{}")), "schema");
    assert_eq!(code(check_schema(&req, "The capital is Paris.")), "schema");
    let req = with_schema(serde_json::json!({"type": 5}));
    assert_eq!(code(check_schema(&req, "{}")), "bad_request");
}

#[test]
fn check_records_runs_in_protocol_order() {
    let (req, res) = signed_pair();
    // The fixture claims 31 prompt tokens; its tokens are outside this toy
    // vocabulary, so the first rule after usage fails.
    let c = ctx(31, 1000);
    assert_eq!(code(check_records(&req, &res, &c, &Toy)), "bad_token");
    let c = Context {
        prompt_tokens: 30,
        ..c
    };
    assert_eq!(code(check_records(&req, &res, &c, &Toy)), "usage");
    let c = Context {
        engine_version: "other",
        ..c
    };
    assert_eq!(code(check_records(&req, &res, &c, &Toy)), "wrong_engine");
}

fn score(argmax: u32, claimed: u32, sampled: u32, top: &[(u32, f32)]) -> PositionScore {
    let best = top.first().map_or(0.0, |t| t.1);
    let logit = |t: u32| top.iter().find(|c| c.0 == t).map_or(-100.0, |c| c.1);
    PositionScore {
        argmax,
        claimed,
        claimed_logit: logit(claimed),
        claimed_margin: best - logit(claimed),
        top: top
            .iter()
            .map(|&(token, l)| Candidate {
                token,
                logit: l,
                margin: best - l,
            })
            .collect(),
        sampled,
        outside_mask: false,
        logprobs: None,
        asked: Vec::new(),
    }
}

const M: MarginRule = MarginRule {
    epsilon: ARITH_V2_EPSILON,
};

#[test]
fn greedy_tokens_are_the_argmax() {
    let d = Decoding::default();
    let top = [(4, 2.0), (1, 1.0), (2, 0.5)];
    let s = |c| score(4, c, 4, &top);
    assert_eq!(check_tokens(&d, &[4, 4], &[s(4), s(4)], M), Ok(2));
    assert_eq!(
        check_tokens(&d, &[4, 4, 1, 2], &[s(4), s(4), s(1), s(2)], M),
        Err(Rejection::TokenMismatch {
            position: 2,
            claimed: 1,
            expected: 4
        })
    );
    // A near tie within epsilon: either token is accepted.
    let tie = [(4, 2.0), (1, 2.0 - ARITH_V2_EPSILON / 2.0)];
    assert_eq!(check_tokens(&d, &[1], &[score(4, 1, 4, &tie)], M), Ok(1));
    let not_tie = [(4, 2.0), (1, 2.0 - ARITH_V2_EPSILON * 4.0)];
    assert_eq!(
        check_tokens(&d, &[1], &[score(4, 1, 4, &not_tie)], M)
            .err()
            .map(|e| e.code()),
        Some("token_mismatch")
    );
    // NaN logits never pass the margin rule.
    let nan = [(4, 2.0), (1, f32::NAN)];
    assert!(check_tokens(&d, &[1], &[score(4, 1, 4, &nan)], M).is_err());
}

#[test]
fn sampled_tokens_are_the_samplers_pick() {
    let d = Decoding {
        temperature_milli: 800,
        seed: 3,
        ..Decoding::default()
    };
    let top = [(4, 2.0), (1, 1.5), (2, 0.5)];
    // The sampler picked 1 (not the arg-max): claiming 1 is right, 4 wrong.
    assert_eq!(check_tokens(&d, &[1], &[score(4, 1, 1, &top)], M), Ok(1));
    assert_eq!(
        check_tokens(
            &d,
            &[1, 4],
            &[score(4, 1, 1, &top), score(4, 4, 1, &top)],
            M
        ),
        Err(Rejection::TokenMismatch {
            position: 1,
            claimed: 4,
            expected: 1
        })
    );
    let tie = [(4, 2.0), (1, 1.5), (2, 1.5)];
    assert_eq!(check_tokens(&d, &[2], &[score(4, 2, 1, &tie)], M), Ok(1));
}

#[test]
fn a_token_outside_the_mask_is_rejected_before_the_pick() {
    let d = Decoding::default();
    let top = [(4, 2.0), (1, 1.0)];
    let mut outside = score(4, 4, 4, &top);
    outside.outside_mask = true;
    // Even the unmasked arg-max is refused where the mask excludes it.
    let r = check_tokens(&d, &[4, 4], &[score(4, 4, 4, &top), outside], M);
    assert_eq!(
        r,
        Err(Rejection::OutsideMask {
            position: 1,
            token: 4
        })
    );
    assert!(r.unwrap_err().is_node_fault());
}

#[test]
fn an_unusable_constraint_is_the_requests_fault() {
    let mut req = testing::request(Hash::of(b"model"));
    req.decoding.constraint = Some(verinfer_types::records::Constraint::JsonSchema(
        serde_json::json!({"type": "object", "not": {}}),
    ));
    let r = check_constraint(&req).unwrap_err();
    assert_eq!(r.code(), "bad_request");
    assert!(r.to_string().contains("`not`"), "{r}");
    req.decoding.constraint = Some(verinfer_types::records::Constraint::JsonObject);
    assert_eq!(check_constraint(&req), Ok(()));
}

#[test]
fn misaligned_scores_are_a_mismatch() {
    let d = Decoding::default();
    let top = [(4, 2.0)];
    assert_eq!(
        check_tokens(&d, &[4, 4], &[score(4, 4, 4, &top)], M)
            .err()
            .and_then(|e| e.position()),
        Some(1)
    );
    assert_eq!(
        check_tokens(
            &d,
            &[4, 1],
            &[score(4, 4, 4, &top), score(4, 4, 4, &top)],
            M
        )
        .err()
        .and_then(|e| e.position()),
        Some(1)
    );
}

#[test]
fn margin_rule_follows_the_engine_version() {
    assert_eq!(
        MarginRule::for_engine(verinfer_inference::ENGINE_VERSION),
        Some(M)
    );
    assert_eq!(MarginRule::for_engine(ENGINE), Some(M));
    for v in [
        "",
        "verinfer-llm",
        "verinfer-llm//arith-v2",
        "verinfer-llm/0.1.0/arith-v1",
        "other/0.1.0/arith-v2",
        "verinfer-llm/0.1.0/arith-v2/x",
    ] {
        assert_eq!(MarginRule::for_engine(v), None, "{v}");
    }
}

/// A reference generation loop over the toy vocabulary, written
/// independently of the rules: takes tokens from `stream` until an end token,
/// a stop sequence in the text so far, or `max` tokens.
fn simulate(stream: &[u32], max: u32, stops: &[String]) -> (Vec<u32>, FinishReason, String) {
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if max == 0 {
        return (out, FinishReason::Length, String::new());
    }
    for &t in stream {
        out.push(t);
        if t == EOS {
            return (out, FinishReason::Eos, lossy(&bytes));
        }
        bytes.extend(Toy.token_bytes(t).unwrap_or_default());
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s.to_string(),
            Err(e) => lossy(&bytes[..e.valid_up_to()]),
        };
        if let Some(at) = stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| valid.find(s.as_str()))
            .min()
        {
            return (out, FinishReason::Stop, valid[..at].to_string());
        }
        if out.len() == max as usize {
            return (out, FinishReason::Length, lossy(&bytes));
        }
    }
    panic!("the stream is longer than max");
}

fn arb_stops() -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(
        vec![
            "b".to_string(),
            "\na".to_string(),
            "é".to_string(),
            "ab\n".to_string(),
            "cc".to_string(),
            String::new(),
        ],
        0..3,
    )
}

use proptest::prelude::*;

proptest! {
    #[test]
    fn honest_endings_pass_and_every_other_ending_fails(
        stream in proptest::collection::vec(0u32..9, 40),
        max in 0u32..30,
        stops in arb_stops(),
    ) {
        let d = Decoding { max_tokens: max, stop: stops.clone(), ..Decoding::default() };
        let c = ctx(5, 1000);
        let (tokens, finish, text) = simulate(&stream, max, &stops);
        let honest = res(&tokens, &text, finish);
        prop_assert_eq!(check_termination(&d, &honest, &c, &Toy), Ok(()));
        prop_assert_eq!(check_text(&d, &honest, &Toy), Ok(()));
        // Any other finish reason is rejected.
        for other in [FinishReason::Eos, FinishReason::Stop, FinishReason::Length] {
            if other != finish {
                let r = res(&tokens, &text, other);
                prop_assert!(check_termination(&d, &r, &c, &Toy).is_err());
            }
        }
        // Extended by the stream's next token, with any finish reason.
        let mut longer = tokens.clone();
        longer.push(stream[tokens.len()]);
        for f in [FinishReason::Eos, FinishReason::Stop, FinishReason::Length] {
            let r = res(&longer, "", f);
            let e = check_termination(&d, &r, &c, &Toy);
            prop_assert!(
                matches!(
                    e,
                    Err(Rejection::PastEos { .. }
                        | Rejection::PastStop { .. }
                        | Rejection::PastMaxTokens { .. })
                ),
                "{:?}", e
            );
            prop_assert_eq!(e.err().and_then(|e| e.position()), Some(tokens.len() as u32));
        }
        // Truncated by one token, keeping the claim.
        if !tokens.is_empty() {
            let r = res(&tokens[..tokens.len() - 1], "", finish);
            prop_assert!(check_termination(&d, &r, &c, &Toy).is_err());
        }
    }
}
