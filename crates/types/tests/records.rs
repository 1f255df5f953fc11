//! Canonical encoding of records: round trips, strictness, golden hashes and
//! signature domain separation.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use verinfer_types::canonical::{self, CanonicalError};
use verinfer_types::records::*;
use verinfer_types::testing;
use verinfer_types::{Hash, Record, RecordError, SignedRecord};

fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 ]{0,20}",
        any::<String>(),
        Just("\"\\\u{0}\u{1f}\u{7f}\u{2028}\u{1f600}".to_string()),
    ]
}

/// Log-probabilities in micro-nats: any value in JSON's safe range encodes.
const MIN_LOGPROB: i64 = -(canonical::MAX_SAFE_INTEGER as i64);

fn arb_request() -> impl Strategy<Value = Request> {
    (
        proptest::collection::vec((arb_text(), arb_text()), 0..4),
        any::<u32>(),
        0u32..=1000,
        0u64..=canonical::MAX_SAFE_INTEGER,
        proptest::collection::vec(arb_text(), 0..3),
        any::<[u8; 16]>(),
        prop_oneof![
            Just(VerificationMode::None),
            any::<u32>().prop_map(|k| VerificationMode::Quorum { k }),
            any::<u32>().prop_map(|p_milli| VerificationMode::Sampled { p_milli }),
            (0u64..=canonical::MAX_SAFE_INTEGER)
                .prop_map(|window_secs| VerificationMode::Optimistic { window_secs }),
        ],
        (
            proptest::option::of(0u32..=MAX_TOP_LOGPROBS),
            -MAX_PENALTY_MILLI..=MAX_PENALTY_MILLI,
            -MAX_PENALTY_MILLI..=MAX_PENALTY_MILLI,
            proptest::collection::btree_map(
                any::<u32>(),
                -MAX_LOGIT_BIAS_MILLI..=MAX_LOGIT_BIAS_MILLI,
                0..4,
            ),
        ),
    )
        .prop_map(|(msgs, temp, top_p, seed, stop, nonce, mode, controls)| {
            let mut r = testing::request(Hash::of(b"m"));
            r.input = Input::Messages(
                msgs.into_iter()
                    .map(|(role, content)| Message { role, content })
                    .collect(),
            );
            r.decoding.temperature_milli = temp;
            r.decoding.top_p_milli = top_p;
            r.decoding.seed = seed;
            r.decoding.stop = stop;
            let (top, frequency, presence, bias) = controls;
            r.decoding.top_logprobs = top;
            r.decoding.frequency_penalty_milli = frequency;
            r.decoding.presence_penalty_milli = presence;
            r.decoding.logit_bias = bias
                .into_iter()
                .map(|(token, bias_milli)| LogitBias { token, bias_milli })
                .collect();
            r.nonce = Nonce(nonce);
            r.policy.verification = mode;
            r.sign(&testing::key(1)).unwrap();
            r
        })
}

fn arb_result() -> impl Strategy<Value = InferenceResult> {
    (
        arb_request(),
        proptest::collection::vec(any::<u32>(), 0..64),
        arb_text(),
        prop_oneof![
            Just(FinishReason::Eos),
            Just(FinishReason::Stop),
            Just(FinishReason::Length)
        ],
        proptest::option::of(proptest::collection::vec(
            (
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..8),
                MIN_LOGPROB..=0i64,
                proptest::collection::vec((any::<u32>(), MIN_LOGPROB..=0i64), 0..4),
            ),
            0..8,
        )),
    )
        .prop_map(|(req, tokens, text, finish, lps)| {
            let mut r = testing::result(&req);
            r.logprobs = lps.map(|lps| {
                lps.into_iter()
                    .map(|(token, bytes, lp, top)| TokenLogprob {
                        token,
                        bytes: HexBytes(bytes.clone()),
                        logprob_micro: lp,
                        top: top
                            .into_iter()
                            .map(|(token, lp)| TokenLogprob {
                                token,
                                bytes: HexBytes(bytes.clone()),
                                logprob_micro: lp,
                                top: Vec::new(),
                            })
                            .collect(),
                    })
                    .collect()
            });
            r.output_tokens = tokens;
            r.output_text = text;
            r.finish_reason = finish;
            r.sign(&testing::key(2)).unwrap();
            r
        })
}

proptest! {
    #[test]
    fn request_roundtrip(r in arb_request()) {
        let bytes = r.to_canonical().unwrap();
        prop_assert_eq!(Request::from_canonical(&bytes).unwrap(), r.clone());
        prop_assert!(r.validate().is_ok());
    }

    #[test]
    fn result_roundtrip(r in arb_result()) {
        let bytes = r.to_canonical().unwrap();
        let back = InferenceResult::from_canonical(&bytes).unwrap();
        prop_assert!(back.verify_signature().is_ok());
        prop_assert_eq!(back, r);
    }

    #[test]
    fn amounts_roundtrip(a in any::<u128>()) {
        let mut receipt = testing::receipt();
        receipt.fees.total = Amount(a);
        let bytes = receipt.to_canonical().unwrap();
        prop_assert_eq!(Receipt::from_canonical(&bytes).unwrap(), receipt);
    }

    /// The direct encoder writes exactly what the reference (a serde_json
    /// value tree, then `encode_value`) writes, for every record shape,
    /// including the signed bytes that leave the signature out.
    #[test]
    fn direct_encoder_matches_value_tree(r in arb_result(), req in arb_request(), a in any::<u128>()) {
        fn reference<T: serde::Serialize>(x: &T) -> Vec<u8> {
            canonical::encode_value(&serde_json::to_value(x).unwrap()).unwrap()
        }
        let mut receipt = testing::receipt();
        receipt.fees.total = Amount(a);
        receipt.request = req.clone();
        receipt.result = r.clone();
        prop_assert_eq!(r.to_canonical().unwrap(), reference(&r));
        prop_assert_eq!(req.to_canonical().unwrap(), reference(&req));
        prop_assert_eq!(receipt.to_canonical().unwrap(), reference(&receipt));
        prop_assert_eq!(receipt.leaf().unwrap().to_canonical().unwrap(), reference(&receipt.leaf().unwrap()));
        let mut unsigned = serde_json::to_value(&r).unwrap();
        unsigned.as_object_mut().unwrap().remove("signature");
        let mut expected = SIGNATURE_DOMAIN.to_vec();
        expected.extend_from_slice(b"verinfer.result.v1\n");
        expected.extend_from_slice(&canonical::encode_value(&unsigned).unwrap());
        prop_assert_eq!(r.signing_bytes().unwrap(), expected);
    }

    /// Any whitespace inserted between tokens makes the encoding non-canonical.
    #[test]
    fn whitespace_is_rejected(r in arb_result(), at in any::<prop::sample::Index>(), ws in prop::sample::select(vec![" ", "\n", "\t", "\r"])) {
        let bytes = r.to_canonical().unwrap();
        // Insert after a structural character, where JSON allows whitespace.
        let positions: Vec<usize> = bytes.iter().enumerate()
            .filter(|(_, b)| matches!(b, b'{' | b'[' | b',' | b':'))
            .map(|(i, _)| i + 1).collect();
        let pos = positions[at.index(positions.len())];
        let mut bad = bytes[..pos].to_vec();
        bad.extend_from_slice(ws.as_bytes());
        bad.extend_from_slice(&bytes[pos..]);
        // It may land inside a string, where it changes the value; it must
        // never decode to the same record.
        // Between tokens it is not canonical; inside a string it is a raw
        // control character, makes the field malformed (hex, enums) or
        // changes the value.
        match InferenceResult::from_canonical(&bad) {
            Err(RecordError::Canonical(
                CanonicalError::NotCanonical | CanonicalError::Shape(_) | CanonicalError::Syntax(_),
            )) => {}
            Err(e) => prop_assert!(false, "unexpected error {:?}", e),
            Ok(other) => prop_assert_ne!(other, r),
        }
    }
}

fn swap_first_two_keys(json: &str) -> String {
    let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
    let keys: Vec<String> = v.keys().cloned().collect();
    // Rebuild with the last key first: still valid JSON, wrong order.
    let mut out = String::from("{");
    let last = keys.last().unwrap().clone();
    let order = std::iter::once(last.clone()).chain(keys.into_iter().filter(|k| *k != last));
    for (i, k) in order.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let val = v.remove(&k).unwrap();
        out.push_str(&format!(
            "{}:{}",
            serde_json::to_string(&k).unwrap(),
            String::from_utf8(canonical::encode_value(&val).unwrap()).unwrap()
        ));
    }
    out.push('}');
    out
}

#[test]
fn non_canonical_records_are_rejected() {
    let res = testing::result(&testing::request(Hash::of(b"m")));
    let good = String::from_utf8(res.to_canonical().unwrap()).unwrap();
    assert!(InferenceResult::from_canonical(good.as_bytes()).is_ok());

    let reordered = swap_first_two_keys(&good);
    assert_ne!(reordered, good);
    assert_eq!(
        InferenceResult::from_canonical(reordered.as_bytes()),
        Err(RecordError::Canonical(CanonicalError::NotCanonical))
    );

    let refused = |text: &str| InferenceResult::from_canonical(text.as_bytes()).unwrap_err();

    let spaced = good.replacen(":", ": ", 1);
    assert_eq!(
        refused(&spaced),
        RecordError::Canonical(CanonicalError::NotCanonical)
    );

    let float = good.replace("\"prompt_tokens\":31", "\"prompt_tokens\":31.0");
    assert!(matches!(
        InferenceResult::from_canonical(float.as_bytes()),
        Err(RecordError::Canonical(CanonicalError::Float(_)))
    ));

    let dup = good.replacen("{", "{\"engine\":\"x\",", 1);
    // The parser keeps one of the two values; the bytes are not the record's.
    assert_eq!(
        refused(&dup),
        RecordError::Canonical(CanonicalError::NotCanonical)
    );

    let extra = good.replacen("\"engine\"", "\"extra\":1,\"engine\"", 1);
    // An unknown field is dropped when parsing, so the bytes differ.
    assert_eq!(
        refused(&extra),
        RecordError::Canonical(CanonicalError::NotCanonical)
    );

    let upper_hex = good.replacen(&res.node.to_hex(), &res.node.to_hex().to_uppercase(), 1);
    assert_eq!(
        refused(&upper_hex),
        RecordError::Canonical(CanonicalError::Shape("invalid Ed25519 public key".into()))
    );

    let wrong_type = good.replace("verinfer.result.v1", "verinfer.result.v2");
    assert!(
        matches!(refused(&wrong_type), RecordError::Canonical(CanonicalError::Shape(ref m)) if m.contains("verinfer.result.v1")),
        "{:?}",
        refused(&wrong_type)
    );
}

/// A record has one encoding: an optional field is absent or holds a value,
/// and an explicit `null` is refused even where parsing is not canonical
/// (receipt bundles), as checkers that hash the bytes they got refuse it.
#[test]
fn an_explicit_null_for_an_optional_field_is_refused() {
    let res = testing::result(&testing::request(Hash::of(b"m")));
    let v = testing::verdict(&res, 1);
    let good = String::from_utf8(v.to_canonical().unwrap()).unwrap();
    assert!(serde_json::from_str::<Verdict>(&good).is_ok());
    for field in ["reason", "failed_position"] {
        let with_null = good.replacen('{', &format!("{{\"{field}\":null,"), 1);
        let err = serde_json::from_str::<Verdict>(&with_null).unwrap_err();
        assert!(err.to_string().contains("null"), "{field}: {err}");
    }
}

#[test]
fn signature_for_one_type_never_verifies_as_another() {
    let req = testing::request(Hash::of(b"m"));
    let res = testing::result(&req);
    let verdict = testing::verdict(&res, 2);
    // Same key (seed 2) signs the result and the verdict; moving the result's
    // signature onto the verdict must fail.
    let mut forged = verdict.clone();
    forged.signature = res.signature;
    assert!(forged.verify_signature().is_err());
    assert!(verdict.verify_signature().is_ok());

    let mut tampered = res.clone();
    tampered.output_text.push('!');
    assert!(tampered.verify_signature().is_err());
    assert!(matches!(
        tampered.clone().sign(&testing::key(9)),
        Err(RecordError::Invalid { .. })
    ));
}

#[test]
fn receipt_leaf_commits_to_opened_text() {
    let receipt = testing::receipt();
    let leaf = receipt.leaf().unwrap();
    assert_eq!(
        leaf.request,
        commitment(&receipt.salt, &receipt.request).unwrap()
    );
    let mut other = receipt.clone();
    other.result.output_text = "Lyon".into();
    assert_ne!(other.leaf().unwrap().result, leaf.result);
    let mut resalted = receipt.clone();
    resalted.salt = Salt([0; 32]);
    assert_ne!(resalted.leaf().unwrap().request, leaf.request);
}

#[test]
fn seed_beyond_safe_range_is_refused() {
    let mut req = testing::request(Hash::of(b"m"));
    req.decoding.seed = canonical::MAX_SAFE_INTEGER + 1;
    assert!(req.to_canonical().is_err());
    assert!(req.validate().is_err());
}

#[test]
fn sampling_controls_out_of_range_are_refused() {
    let bias = |token, bias_milli| LogitBias { token, bias_milli };
    let edits: [fn(&mut Decoding); 6] = [
        |d| d.top_logprobs = Some(MAX_TOP_LOGPROBS + 1),
        |d| d.frequency_penalty_milli = MAX_PENALTY_MILLI + 1,
        |d| d.presence_penalty_milli = -MAX_PENALTY_MILLI - 1,
        |d| {
            d.logit_bias = vec![LogitBias {
                token: 1,
                bias_milli: MAX_LOGIT_BIAS_MILLI + 1,
            }]
        },
        |d| {
            d.logit_bias = vec![
                LogitBias {
                    token: 5,
                    bias_milli: 1,
                },
                LogitBias {
                    token: 2,
                    bias_milli: 1,
                },
            ]
        },
        |d| {
            d.logit_bias = vec![
                LogitBias {
                    token: 0,
                    bias_milli: 1
                };
                MAX_LOGIT_BIAS_TOKENS + 1
            ]
        },
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut req = testing::request(Hash::of(b"m"));
        edit(&mut req.decoding);
        req.sign(&testing::key(1)).unwrap();
        assert!(
            matches!(req.validate(), Err(RecordError::Invalid { .. })),
            "edit {i}"
        );
    }
    let mut req = testing::request(Hash::of(b"m"));
    req.decoding.top_logprobs = Some(MAX_TOP_LOGPROBS);
    req.decoding.logit_bias = vec![
        bias(2, -MAX_LOGIT_BIAS_MILLI),
        bias(5, MAX_LOGIT_BIAS_MILLI),
    ];
    req.sign(&testing::key(1)).unwrap();
    assert!(req.validate().is_ok());
}

/// Golden hashes: if one of these changes, the wire format changed and every
/// stored receipt and signature with it. Bump the record version instead.
#[test]
fn golden_hashes() {
    let receipt = testing::receipt();
    let got = [
        ("request", receipt.request.hash().unwrap()),
        ("result", receipt.result.hash().unwrap()),
        ("verdict", receipt.certificate.verdicts[0].hash().unwrap()),
        ("certificate", receipt.certificate.hash().unwrap()),
        ("receipt", receipt.hash().unwrap()),
        ("leaf", receipt.leaf().unwrap().hash().unwrap()),
    ];
    let want = [
        (
            "request",
            "10da184b2aa58549817cd38dd7fd437e186577ce4f824fa28bae2f31f0c7822d",
        ),
        (
            "result",
            "c8235d14e47035579449d2e07f8ddadd2d4116be9f172cf3265a4a6e9fe52e63",
        ),
        (
            "verdict",
            "3988063754296b918694f2b002a816eddda6aa1356c3d24f80390fdc91af8f32",
        ),
        (
            "certificate",
            "458ad5328c4ede714f7907c4462ddb389731b01eedd54bae209ca79b3f1969cc",
        ),
        (
            "receipt",
            "66d013951f15e30bf43cb3e3f24edca52dc8097daf68f218b758003e19b84f06",
        ),
        (
            "leaf",
            "14f4a565b0e101d5f50c0c97644ca07067dba858af9f7b48a7a58bd49ce645b3",
        ),
    ];
    for ((name, h), (wname, w)) in got.iter().zip(want) {
        assert_eq!(*name, wname);
        assert_eq!(h.to_hex(), w, "golden hash of {name} changed");
    }
}

/// The leaf's canonical bytes, spelled out, so the format is visible in review.
#[test]
fn golden_leaf_bytes() {
    let leaf = testing::receipt().leaf().unwrap();
    let text = String::from_utf8(leaf.to_canonical().unwrap()).unwrap();
    assert_eq!(text, include_str!("golden/leaf.json").trim_end());
}
