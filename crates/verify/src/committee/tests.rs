//! Unit and property tests of the committee logic.

use super::*;
use proptest::prelude::*;
use verinfer_types::testing;
use verinfer_types::SecretKey;

fn keys(n: u8) -> Vec<SecretKey> {
    (10..10 + n).map(testing::key).collect()
}

fn publics(keys: &[SecretKey]) -> Vec<PublicKey> {
    keys.iter().map(SecretKey::public).collect()
}

fn result() -> InferenceResult {
    testing::result(&testing::request(Hash::of(b"model")))
}

fn verdict(res: &InferenceResult, key: &SecretKey, decision: Decision) -> Verdict {
    let mut v = testing::verdict(res, 3);
    v.verifier = key.public();
    v.decision = decision;
    if decision == Decision::Reject {
        v.reason = Some("token_mismatch: position 2".into());
        v.failed_position = Some(2);
    }
    v.sign(key).unwrap_or_else(|e| panic!("{e}"));
    v
}

fn hash(res: &InferenceResult) -> Hash {
    res.hash().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn seed_depends_on_checkpoint_and_result() {
    let a = selection_seed(b"checkpoint 1", &Hash::of(b"r"));
    assert_eq!(a, selection_seed(b"checkpoint 1", &Hash::of(b"r")));
    assert_ne!(a, selection_seed(b"checkpoint 2", &Hash::of(b"r")));
    assert_ne!(a, selection_seed(b"checkpoint 1", &Hash::of(b"s")));
}

#[test]
fn plans_follow_the_mode() {
    let seed = Hash::of(b"seed");
    assert_eq!(plan(&VerificationMode::None, &seed).verifiers, 0);
    let q = plan(&VerificationMode::Quorum { k: 3 }, &seed);
    assert_eq!((q.verifiers, q.quorum), (3, 3));
    let o = plan(&VerificationMode::Optimistic { window_secs: 60 }, &seed);
    assert_eq!((o.verifiers, o.challenge_window_secs), (0, 60));
    assert_eq!(
        plan(&VerificationMode::Sampled { p_milli: 1000 }, &seed).verifiers,
        1
    );
    assert_eq!(
        plan(&VerificationMode::Sampled { p_milli: 0 }, &seed).verifiers,
        0
    );
    // About p of the seeds are drawn.
    let drawn = (0u32..2000)
        .filter(|i| sampled(&Hash::of(&i.to_le_bytes()), 250))
        .count();
    assert!((400..600).contains(&drawn), "{drawn}");
}

#[test]
fn certificate_from_a_quorum_of_accepts() {
    let res = result();
    let h = hash(&res);
    let ks = keys(4);
    let committee = publics(&ks[..3]);
    let mut vs: Vec<Verdict> = ks[..3]
        .iter()
        .map(|k| verdict(&res, k, Decision::Accept))
        .collect();
    // Noise that must be ignored: a non-member, a duplicate, a forgery and
    // a verdict on another result.
    vs.push(verdict(&res, &ks[3], Decision::Reject));
    vs.push(vs[0].clone());
    let mut forged = verdict(&res, &ks[1], Decision::Reject);
    forged.cost_micros += 1;
    vs.push(forged);
    let mut other = res.clone();
    other.output_text.push('x');
    vs.push(verdict(&other, &ks[2], Decision::Reject));
    // A rejection of this result checked against another request.
    let mut elsewhere = testing::verdict(&res, 3);
    elsewhere.request = Hash::of(b"another request");
    elsewhere.verifier = ks[0].public();
    elsewhere.decision = Decision::Reject;
    elsewhere.reason = Some("wrong_request: elsewhere".into());
    elsewhere.sign(&ks[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        validate_verdict(&elsewhere, &res.request, &h, &committee),
        Err(VerdictError::WrongRequest(Box::new(ks[0].public())))
    );
    vs.push(elsewhere);

    let cert = assemble_certificate(&res.request, &h, &committee, 3, &vs)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cert.verdicts.len(), 3);
    assert!(cert
        .verdicts
        .windows(2)
        .all(|w| w[0].verifier < w[1].verifier));
    assert_eq!(
        verify_certificate(&cert, &res.request, &h, &committee, 3),
        Ok(())
    );
    assert!(matches!(
        verify_certificate(&cert, &res.request, &h, &committee, 4),
        Err(CertificateError::NoQuorum { have: 3, need: 4 })
    ));
    assert!(verify_certificate(&cert, &res.request, &h, &committee[..2], 2).is_err());
    let mut unordered = cert.clone();
    unordered.verdicts.swap(0, 1);
    assert_eq!(
        verify_certificate(&unordered, &res.request, &h, &committee, 3),
        Err(CertificateError::Order)
    );

    assert!(matches!(
        assemble_certificate(&res.request, &h, &committee, 3, &vs[..2]),
        Err(CertificateError::NoQuorum { have: 2, need: 3 })
    ));
    let mut with_reject = vs[..2].to_vec();
    with_reject.push(verdict(&res, &ks[2], Decision::Reject));
    assert!(matches!(
        assemble_certificate(&res.request, &h, &committee, 3, &with_reject),
        Err(CertificateError::Rejected(r)) if r.len() == 1
    ));
    assert!(matches!(
        assemble_certificate(&res.request, &h, &committee, 0, &[]),
        Err(CertificateError::NoQuorum { have: 0, need: 1 })
    ));
}

#[test]
fn dispute_against_the_node() {
    let res = result();
    let ks = keys(8);
    // First round: one verifier rejects, one accepts (a lazy friend).
    let earlier = vec![
        verdict(&res, &ks[0], Decision::Reject),
        verdict(&res, &ks[1], Decision::Accept),
    ];
    let committee = publics(&ks[2..7]);
    let escalation: Vec<Verdict> = ks[2..7]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let d = if i == 4 {
                Decision::Accept
            } else {
                Decision::Reject
            };
            verdict(&res, k, d)
        })
        .collect();
    let out =
        resolve_dispute(&res, &earlier, &committee, &escalation).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.decision, Decision::Reject);
    let mut want = vec![
        Offender::Node(res.node),
        Offender::Verifier(ks[1].public()),
        Offender::Verifier(ks[6].public()),
    ];
    want.sort();
    assert_eq!(out.wrong, want);
    assert_eq!(out.wrong[0], Offender::Node(res.node));
    assert_eq!(out.evidence.majority.len(), 4);
    assert_eq!(out.evidence.losing.len(), 2);
    assert_eq!(out.evidence.result, res);
}

#[test]
fn dispute_against_a_verifier() {
    let res = result();
    let ks = keys(6);
    let earlier = vec![verdict(&res, &ks[0], Decision::Reject)];
    let committee = publics(&ks[1..6]);
    let mut escalation: Vec<Verdict> = ks[1..6]
        .iter()
        .map(|k| verdict(&res, k, Decision::Accept))
        .collect();
    // One member signs both ways: named wrong, counted for neither side.
    escalation.push(verdict(&res, &ks[5], Decision::Reject));
    let out =
        resolve_dispute(&res, &earlier, &committee, &escalation).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.decision, Decision::Accept);
    let mut want = vec![
        Offender::Verifier(ks[0].public()),
        Offender::Verifier(ks[5].public()),
    ];
    want.sort();
    assert_eq!(out.wrong, want);
    assert_eq!(out.evidence.majority.len(), 4);
    assert_eq!(out.evidence.losing.len(), 3);
}

#[test]
fn dispute_without_majority_or_signature() {
    let res = result();
    let ks = keys(5);
    let committee = publics(&ks[..4]);
    let escalation = vec![
        verdict(&res, &ks[0], Decision::Accept),
        verdict(&res, &ks[1], Decision::Accept),
        verdict(&res, &ks[2], Decision::Reject),
        // Not a member: ignored.
        verdict(&res, &ks[4], Decision::Accept),
    ];
    assert_eq!(
        resolve_dispute(&res, &[], &committee, &escalation),
        Err(DisputeError::Undecided {
            accept: 2,
            reject: 1,
            committee: 4
        })
    );
    let mut unsigned = res.clone();
    unsigned.output_tokens.push(1);
    assert_eq!(
        resolve_dispute(&unsigned, &[], &committee, &escalation),
        Err(DisputeError::UnsignedResult)
    );
}

fn arb_keys() -> impl Strategy<Value = Vec<PublicKey>> {
    proptest::collection::vec(any::<u8>(), 0..24).prop_map(|seeds| {
        seeds
            .into_iter()
            .map(|s| testing::key(s).public())
            .collect()
    })
}

proptest! {
    #[test]
    fn selection_is_a_deterministic_function_of_its_inputs(
        cands in arb_keys(),
        k in 0usize..30,
        seed in any::<[u8; 32]>(),
        round in 0u32..4,
        rotate in 0usize..24,
    ) {
        let seed = Hash(seed);
        let picked = select(&cands, k, &seed, round);
        // Same inputs, same committee; candidate order does not matter.
        prop_assert_eq!(&picked, &select(&cands, k, &seed, round));
        let mut shuffled = cands.clone();
        if !shuffled.is_empty() {
            let r = rotate % shuffled.len();
            shuffled.rotate_left(r);
        }
        shuffled.reverse();
        prop_assert_eq!(&picked, &select(&shuffled, k, &seed, round));
        // Distinct members, all candidates, as many as asked or available.
        let mut distinct = cands.clone();
        distinct.sort();
        distinct.dedup();
        prop_assert_eq!(picked.len(), k.min(distinct.len()));
        let mut sorted = picked.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), picked.len());
        prop_assert!(picked.iter().all(|p| cands.contains(p)));
        // A larger committee from the same draw contains the smaller.
        let more = select(&cands, k + 1, &seed, round);
        prop_assert_eq!(&more[..picked.len()], &picked[..]);
    }

    #[test]
    fn sampling_draw_is_monotone_in_p(seed in any::<[u8; 32]>(), p in 0u32..1000) {
        let seed = Hash(seed);
        if sampled(&seed, p) {
            prop_assert!(sampled(&seed, p + 1));
        }
        prop_assert!(!sampled(&seed, 0));
        prop_assert!(sampled(&seed, 1000));
    }
}

#[test]
fn watchers_are_the_first_of_the_draw_or_everyone_without_a_seed() {
    let keys = publics(&keys(5));
    let seed = Hash::of(b"seed");
    assert_eq!(watchers(&keys, Some(&seed), 2), select(&keys, 2, &seed, 0));
    assert_eq!(watchers(&keys, Some(&seed), 0).len(), 1, "at least one");
    let mut all = watchers(&keys, None, 1);
    all.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(all, want);
}
