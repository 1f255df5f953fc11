//! `check_receipt` on real signed bundles: the honest one passes, and every
//! tampering (text, leaf, id, proof, checkpoint, cosignatures, verdicts,
//! pinned keys) fails with the error that names it.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use verinfer_log::merkle::leaf_hash;
use verinfer_log::witness::add_cosignature;
use verinfer_log::Log;
use verinfer_types::records::{Amount, Decision, VerificationMode};
use verinfer_types::{Record, SecretKey, SignedRecord};
use verinfer_verify::receipt::{
    check_receipt, witness_name, ReceiptBundle, ReceiptError, Report, Status, Trust,
};
use verinfer_verify::testing::{
    bundle_for, bundle_log_key, bundle_witness_key, bundle_witness_secret, signed_bundle,
    test_receipt, BUNDLE_ORIGIN,
};

fn witnesses() -> Vec<SecretKey> {
    (0..3).map(bundle_witness_secret).collect()
}

fn check(b: &ReceiptBundle) -> Result<Report, ReceiptError> {
    check_receipt(b, &Trust::from_bundle(b).unwrap())
}

#[test]
fn honest_bundle_verifies() {
    let b = signed_bundle();
    let r = check(&b).unwrap();
    assert_eq!(r.status, Status::Verified);
    assert_eq!(r.id, b.id);
    assert_eq!(r.index, 5);
    let d = r.disclosed.unwrap();
    assert_eq!((d.verdicts, d.verdicts_required), (2, 2));
    assert_eq!(r.checkpoint.size, 11);
    assert_eq!(r.checkpoint.origin, BUNDLE_ORIGIN);
    assert_eq!(
        (r.checkpoint.cosignatures, r.checkpoint.witness_quorum),
        (3, 2)
    );
}

#[test]
fn pinned_keys_equal_to_the_bundles_verify() {
    let b = signed_bundle();
    let trust = Trust {
        log_key: bundle_log_key(),
        witnesses: witnesses().iter().map(bundle_witness_key).collect(),
        witness_quorum: 3,
    };
    assert_eq!(check_receipt(&b, &trust).unwrap().status, Status::Verified);
}

#[test]
fn bundle_from_a_log_on_disk_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let log_secret = verinfer_verify::testing::bundle_log_secret();
    let log = Log::init_with_key(dir.path(), BUNDLE_ORIGIN, &log_secret).unwrap();
    let ws = witnesses();
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 1 },
        &ws[2..],
        Decision::Accept,
    );
    let leaf = receipt.leaf().unwrap();
    for i in 0..3 {
        log.append(format!("filler {i}").into_bytes()).unwrap();
    }
    let index = log.append(leaf.to_canonical().unwrap()).unwrap();
    log.append(b"after".to_vec()).unwrap();
    let mut cp = log.checkpoint().unwrap();
    for (t, k) in ws.iter().enumerate() {
        add_cosignature(&mut cp.note, &witness_name(&k.public()), k, 100 + t as u64).unwrap();
    }
    let proof = log.inclusion_proof(index, cp.checkpoint.size).unwrap();
    let b = ReceiptBundle {
        id: log.leaf_hash(index).unwrap(),
        index,
        leaf,
        receipt: Some(receipt),
        checkpoint: Some(cp.note.to_string()),
        inclusion_proof: proof.iter().map(|h| B64.encode(h.0)).collect(),
        log_key: log.verifier_key().to_string(),
        witnesses: ws
            .iter()
            .map(|k| bundle_witness_key(k).to_string())
            .collect(),
        witness_quorum: 3,
        finality: None,
    };
    let r = check(&b).unwrap();
    assert_eq!(r.status, Status::Verified);
    assert_eq!((r.index, r.checkpoint.size), (3, 5));
}

#[test]
fn undisclosed_receipt_checks_the_leaf_only() {
    let mut b = signed_bundle();
    b.receipt = None;
    let r = check(&b).unwrap();
    assert_eq!(r.status, Status::LeafOnly);
    assert!(r.disclosed.is_none());
}

#[test]
fn policies_without_verdicts_are_provisional() {
    let ws = witnesses();
    for mode in [
        VerificationMode::None,
        VerificationMode::Sampled { p_milli: 100 },
        VerificationMode::Optimistic { window_secs: 60 },
    ] {
        let b = bundle_for(&test_receipt(mode, &[], Decision::Accept), &ws, &ws, 2);
        let r = check(&b).unwrap();
        assert_eq!(r.status, Status::Provisional);
        assert_eq!(r.disclosed.unwrap().verdicts_required, 0);
    }
}

#[test]
fn changed_output_text_fails_the_result_commitment() {
    let mut b = signed_bundle();
    let r = b.receipt.as_mut().unwrap();
    let mut bytes = r.result.output_text.clone().into_bytes();
    bytes[0] ^= 0x01;
    r.result.output_text = String::from_utf8(bytes).unwrap();
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::LeafMismatch("result commitment")
    );
}

#[test]
fn changed_output_text_in_json_fails() {
    let json = serde_json::to_string(&signed_bundle()).unwrap();
    assert_eq!(
        serde_json::from_str::<ReceiptBundle>(&json).unwrap(),
        signed_bundle()
    );
    let at = json.find("Jupiter").unwrap();
    let mut bytes = json.into_bytes();
    bytes[at] = b'K';
    let b: ReceiptBundle = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::LeafMismatch("result commitment")
    );
}

#[test]
fn changed_leaf_fees_fail_the_id() {
    let mut b = signed_bundle();
    b.leaf.fees.total = Amount(b.leaf.fees.total.0 + 1);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::IdMismatch { .. }
    ));
    // With the id recomputed too, the receipt no longer opens the leaf...
    b.id = leaf_hash(&b.leaf.to_canonical().unwrap());
    assert_eq!(check(&b).unwrap_err(), ReceiptError::LeafMismatch("fees"));
    // ...and without the receipt, the leaf is not the one in the log.
    b.receipt = None;
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::Inclusion { .. }
    ));
}

#[test]
fn changed_id_fails() {
    let mut b = signed_bundle();
    b.id.0[31] ^= 1;
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::IdMismatch { .. }
    ));
}

#[test]
fn changed_proof_fails() {
    let mut b = signed_bundle();
    let mut h = B64.decode(&b.inclusion_proof[1]).unwrap();
    h[0] ^= 1;
    b.inclusion_proof[1] = B64.encode(h);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::Inclusion { index: 5, .. }
    ));

    let mut b = signed_bundle();
    b.inclusion_proof.pop();
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::Inclusion { .. }
    ));

    let mut b = signed_bundle();
    b.inclusion_proof[0] = "not base64!".into();
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::ProofEncoding { position: 0 }
    );
}

#[test]
fn changed_index_fails() {
    let mut b = signed_bundle();
    b.index = 4;
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::Inclusion { .. }
    ));
    b.index = 11;
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::NotCovered {
            index: 11,
            size: 11
        }
    );
}

#[test]
fn changed_checkpoint_root_fails_the_log_signature() {
    let mut b = signed_bundle();
    let note = b.checkpoint.clone().unwrap();
    let root_line = note.lines().nth(2).unwrap().to_string();
    let mut root = B64.decode(&root_line).unwrap();
    root[0] ^= 1;
    b.checkpoint = Some(note.replacen(&root_line, &B64.encode(root), 1));
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::LogSignature(_)
    ));
}

#[test]
fn missing_checkpoint_fails() {
    let mut b = signed_bundle();
    b.checkpoint = None;
    let e = check(&b).unwrap_err();
    assert_eq!(e, ReceiptError::NoCheckpoint);
    assert_eq!(
        e.to_string(),
        "no cosigned checkpoint covers this receipt yet"
    );
}

#[test]
fn cosignatures_below_quorum_fail() {
    // Remove two of the three cosignature lines from the note.
    let mut b = signed_bundle();
    let note = b.checkpoint.clone().unwrap();
    let kept: Vec<&str> = note
        .split_inclusive('\n')
        .filter(|l| {
            !l.starts_with("\u{2014} witness.verinfer/")
                || l.contains(&witness_name(&bundle_witness_secret(1).public()))
        })
        .collect();
    b.checkpoint = Some(kept.concat());
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 1, need: 2 }
    );

    // A cosignature by a key that is not a listed witness does not count.
    let ws = witnesses();
    let outsider = SecretKey::from_seed(&[0x66; 32]);
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &ws[..2],
        Decision::Accept,
    );
    let b = bundle_for(&receipt, &ws, &[ws[0].clone(), outsider], 2);
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 1, need: 2 }
    );
}

#[test]
fn verdict_from_a_non_witness_fails() {
    let ws = witnesses();
    let outsider = SecretKey::from_seed(&[0x66; 32]);
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &[ws[0].clone(), outsider.clone()],
        Decision::Accept,
    );
    let b = bundle_for(&receipt, &ws, &ws, 2);
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::UntrustedVerifier {
            verifier: outsider.public().to_hex()
        }
    );
}

#[test]
fn rejecting_verdict_fails() {
    let ws = witnesses();
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &ws[..2],
        Decision::Reject,
    );
    let b = bundle_for(&receipt, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::VerdictRejects { .. }
    ));
}

#[test]
fn fewer_verdicts_than_the_quorum_fail() {
    let ws = witnesses();
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 3 },
        &ws[..2],
        Decision::Accept,
    );
    let b = bundle_for(&receipt, &ws, &ws, 2);
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::TooFewVerdicts { have: 2, need: 3 }
    );
    // quorum(0) still needs one verdict.
    let receipt = test_receipt(VerificationMode::Quorum { k: 0 }, &[], Decision::Accept);
    let b = bundle_for(&receipt, &ws, &ws, 2);
    assert_eq!(
        check(&b).unwrap_err(),
        ReceiptError::TooFewVerdicts { have: 0, need: 1 }
    );
}

#[test]
fn duplicate_verdicts_fail() {
    let ws = witnesses();
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &[ws[0].clone(), ws[0].clone()],
        Decision::Accept,
    );
    let b = bundle_for(&receipt, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::DuplicateVerifier { .. }
    ));
}

#[test]
fn records_committed_with_bad_signatures_fail() {
    // The leaf commits to these altered records, so only the signatures
    // can tell.
    let ws = witnesses();
    let honest = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &ws[..2],
        Decision::Accept,
    );

    let mut r = honest.clone();
    r.certificate.verdicts[1].signature.0[0] ^= 1;
    let b = bundle_for(&r, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::VerdictSignature { .. }
    ));

    let mut r = honest.clone();
    r.result.output_text.push('!');
    let b = bundle_for(&r, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::ResultSignature(_)
    ));

    let mut r = honest;
    r.request.decoding.max_tokens += 1;
    let b = bundle_for(&r, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::RequestSignature(_)
    ));
}

#[test]
fn verdict_on_another_request_fails() {
    // A verdict (v2) names the request it checked; one signed for another
    // request does not certify this receipt even if the result is the same.
    let ws = witnesses();
    let mut r = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &ws[..2],
        Decision::Accept,
    );
    let v = &mut r.certificate.verdicts[0];
    v.request = verinfer_types::Hash::of(b"another request");
    let signer = ws.iter().find(|k| k.public() == v.verifier).unwrap();
    v.sign(signer).unwrap();
    let b = bundle_for(&r, &ws, &ws, 2);
    assert!(matches!(
        check(&b).unwrap_err(),
        ReceiptError::VerdictWrongRequest { .. }
    ));
}

#[test]
fn wrong_pinned_log_key_fails() {
    let b = signed_bundle();
    let mut trust = Trust::from_bundle(&b).unwrap();
    // Same origin, other key: the signature is missing under that key.
    let other = SecretKey::from_seed(&[0x99; 32]);
    trust.log_key.key = other.public();
    assert!(matches!(
        check_receipt(&b, &trust).unwrap_err(),
        ReceiptError::LogSignature(_)
    ));
}

#[test]
fn pinned_witnesses_decide_what_counts() {
    let b = signed_bundle();
    let mut trust = Trust::from_bundle(&b).unwrap();
    // Only witness 2, which gave no verdict: the verdicts are untrusted.
    trust.witnesses = vec![bundle_witness_key(&bundle_witness_secret(2))];
    assert!(matches!(
        check_receipt(&b, &trust).unwrap_err(),
        ReceiptError::UntrustedVerifier { .. }
    ));
    // Witnesses 0 and 1 only, with a pinned quorum of 3.
    trust.witnesses = (0..2)
        .map(|i| bundle_witness_key(&bundle_witness_secret(i)))
        .collect();
    trust.witness_quorum = 3;
    assert_eq!(
        check_receipt(&b, &trust).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 2, need: 3 }
    );
}

#[test]
fn pinned_quorum_is_not_lowered_by_the_receipt() {
    let mut b = signed_bundle();
    b.witness_quorum = 0;
    let note = b.checkpoint.clone().unwrap();
    b.checkpoint = Some(
        note.split_inclusive('\n')
            .filter(|l| !l.starts_with("\u{2014} witness.verinfer/"))
            .collect(),
    );
    let pinned: Vec<_> = witnesses().iter().map(bundle_witness_key).collect();
    // Default: a strict majority of the distinct pinned witnesses.
    let trust = Trust::pinned(bundle_log_key(), pinned.clone(), None);
    assert_eq!(trust.witness_quorum, 2);
    assert_eq!(
        check_receipt(&b, &trust).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 0, need: 2 }
    );
    // One key listed twice is one witness.
    let mut twice = pinned.clone();
    twice.push(pinned[0].clone());
    assert_eq!(
        Trust::pinned(bundle_log_key(), twice, None).witness_quorum,
        2
    );
    // The caller's explicit quorum holds too.
    let trust = Trust::pinned(bundle_log_key(), pinned, Some(3));
    assert_eq!(
        check_receipt(&b, &trust).unwrap_err(),
        ReceiptError::TooFewCosignatures { have: 0, need: 3 }
    );
}

#[test]
fn unknown_fields_are_refused() {
    let mut v = serde_json::to_value(signed_bundle()).unwrap();
    v["extra"] = serde_json::json!(1);
    assert!(serde_json::from_value::<ReceiptBundle>(v).is_err());
}
