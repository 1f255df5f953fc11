//! Committees as pure functions: who checks a result, whether verdicts make
//! a certificate, and who was wrong in a dispute.
//!
//! # Randomness fixed after the result
//!
//! A committee is drawn from [`selection_seed`]: SHA-256 over a domain tag,
//! the signed checkpoint note that first includes the commitment to the
//! result, and the result hash. The node cannot know the checkpoint (it is
//! signed by the log after the result is committed), so it cannot grind
//! result variants until friendly verifiers are drawn. The same seed decides
//! whether a `sampled(p)` result is checked ([`plan`]).
//!
//! # Selection
//!
//! [`select`] ranks every distinct candidate by
//! `SHA-256(domain || seed || round || key)` and takes the `k` lowest
//! (rendezvous hashing): deterministic, independent of the order the
//! candidates are listed in, and with distinct members. `round` 0 is the first
//! committee; escalations use later rounds (usually with the earlier members
//! removed from the candidates).

use std::collections::BTreeMap;

use verinfer_types::records::{
    Certificate, CertificateTag, Decision, InferenceResult, Verdict, VerificationMode,
};
use verinfer_types::{Hash, PublicKey, Record, RecordError, SignedRecord};

/// Domain tag of [`selection_seed`].
pub const SEED_DOMAIN: &[u8] = b"verinfer/committee-seed/v1\n";
/// Domain tag of the per-candidate rank in [`select`].
pub const RANK_DOMAIN: &[u8] = b"verinfer/committee-rank/v1\n";
/// Domain tag of the `sampled(p)` draw in [`plan`].
pub const SAMPLE_DOMAIN: &[u8] = b"verinfer/sampled/v1\n";

/// The committee randomness of a result: SHA-256 of a domain tag, the
/// length-prefixed checkpoint note that first includes the result's
/// commitment, and the result hash.
pub fn selection_seed(checkpoint_note: &[u8], result: &Hash) -> Hash {
    let len = (checkpoint_note.len() as u64).to_be_bytes();
    Hash::of_parts(&[SEED_DOMAIN, &len, checkpoint_note, result.as_bytes()])
}

fn rank(seed: &Hash, round: u32, key: &PublicKey) -> Hash {
    Hash::of_parts(&[
        RANK_DOMAIN,
        seed.as_bytes(),
        &round.to_be_bytes(),
        &key.to_bytes(),
    ])
}

/// The `k` verifiers of `round` drawn from `candidates` (duplicates count
/// once), in draw order. Fewer than `k` when there are fewer candidates.
pub fn select(candidates: &[PublicKey], k: usize, seed: &Hash, round: u32) -> Vec<PublicKey> {
    let ranked: BTreeMap<(Hash, PublicKey), ()> = candidates
        .iter()
        .map(|c| ((rank(seed, round, c), *c), ()))
        .collect();
    ranked.into_keys().map(|(_, c)| c).take(k).collect()
}

/// The verifiers that watch an optimistic answer during its window: the
/// first `count` (at least one) of the `eligible` set's round-0 ranking
/// under the Result's committee seed, the draw a `quorum(count)` check
/// makes; every eligible verifier when the seed is unknown (nobody can then
/// tell who was drawn, so all watch).
pub fn watchers(eligible: &[PublicKey], seed: Option<&Hash>, count: usize) -> Vec<PublicKey> {
    match seed {
        Some(seed) => select(eligible, count.max(1), seed, 0),
        None => select(eligible, eligible.len(), &Hash::default(), 0),
    }
}

/// What a result's verification mode asks for, given its committee seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Verifiers to draw (0: none checks now).
    pub verifiers: usize,
    /// Accepting verdicts needed for a certificate.
    pub quorum: usize,
    /// Seconds during which a challenge may still overturn the result
    /// (`optimistic`); 0 means final once certified.
    pub challenge_window_secs: u64,
}

/// The plan of `mode` for a result with committee seed `seed`.
///
/// * `none`: no verifier.
/// * `quorum(k)`: `k` verifiers, all must accept.
/// * `sampled(p)`: one verifier with probability `p_milli / 1000`, drawn
///   from `seed` (so after the result is fixed), else none.
/// * `optimistic(window)`: no verifier now; final when no challenge arrives
///   within the window.
pub fn plan(mode: &VerificationMode, seed: &Hash) -> Plan {
    let none = Plan {
        verifiers: 0,
        quorum: 0,
        challenge_window_secs: 0,
    };
    match mode {
        VerificationMode::None => none,
        VerificationMode::Quorum { k } => {
            let k = *k as usize;
            Plan {
                verifiers: k,
                quorum: k,
                ..none
            }
        }
        VerificationMode::Sampled { p_milli } => {
            if sampled(seed, *p_milli) {
                Plan {
                    verifiers: 1,
                    quorum: 1,
                    ..none
                }
            } else {
                none
            }
        }
        VerificationMode::Optimistic { window_secs } => Plan {
            challenge_window_secs: *window_secs,
            ..none
        },
    }
}

/// Whether a `sampled(p_milli)` result with committee seed `seed` is checked.
pub fn sampled(seed: &Hash, p_milli: u32) -> bool {
    let d = Hash::of_parts(&[SAMPLE_DOMAIN, seed.as_bytes()]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    // Uniform in [0, 1000): the high bits of x * 1000 / 2^64.
    let draw = (u128::from(u64::from_be_bytes(b)) * 1000) >> 64;
    draw < u128::from(p_milli)
}

/// A verdict that cannot count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerdictError {
    /// Its signature does not verify.
    #[error("verdict by {0}: bad signature")]
    BadSignature(Box<PublicKey>),
    /// It is about another result.
    #[error("verdict by {0}: about another result")]
    WrongResult(Box<PublicKey>),
    /// It checked the result against another request.
    #[error("verdict by {0}: about another request")]
    WrongRequest(Box<PublicKey>),
    /// Its verifier is not in the committee.
    #[error("verdict by {0}: not a committee member")]
    NotMember(Box<PublicKey>),
}

/// Checks that a verdict is signed, about `result` checked against
/// `request`, and by a member of `committee`.
pub fn validate_verdict(
    verdict: &Verdict,
    request: &Hash,
    result: &Hash,
    committee: &[PublicKey],
) -> Result<(), VerdictError> {
    let who = Box::new(verdict.verifier);
    if verdict.result != *result {
        return Err(VerdictError::WrongResult(who));
    }
    if verdict.request != *request {
        return Err(VerdictError::WrongRequest(who));
    }
    if !committee.contains(&who) {
        return Err(VerdictError::NotMember(who));
    }
    verdict
        .verify_signature()
        .map_err(|_| VerdictError::BadSignature(who))
}

/// Why verdicts make no certificate.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    /// A committee member rejected: the result goes to a dispute.
    #[error("{} committee member(s) rejected the result", .0.len())]
    Rejected(Vec<Verdict>),
    /// Not enough valid accepting verdicts.
    #[error("{have} accepting verdicts, {need} needed")]
    NoQuorum {
        /// Valid accepting verdicts from distinct members.
        have: usize,
        /// The quorum.
        need: usize,
    },
    /// A verdict in a certificate cannot count.
    #[error(transparent)]
    Verdict(#[from] VerdictError),
    /// A certificate's verdicts are not distinct, ordered by verifier key.
    #[error("certificate verdicts are not ordered by distinct verifier keys")]
    Order,
    /// The certificate names another result, or holds a rejection.
    #[error("certificate is not an acceptance of this result")]
    NotAcceptance,
    /// Hashing a record failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Gathers a certificate on `result`, checked against `request`, from the
/// verdicts received from its committee.
///
/// Verdicts that cannot count (bad signature, other result or request,
/// non-member) are
/// ignored, as is a member's second verdict. Any valid rejection from a
/// member means no certificate ([`CertificateError::Rejected`]). Otherwise
/// the valid accepting verdicts, ordered by verifier key, make the
/// certificate if there are at least `quorum` of them.
pub fn assemble_certificate(
    request: &Hash,
    result: &Hash,
    committee: &[PublicKey],
    quorum: usize,
    verdicts: &[Verdict],
) -> Result<Certificate, CertificateError> {
    let mut by_member: BTreeMap<PublicKey, &Verdict> = BTreeMap::new();
    for v in verdicts {
        if validate_verdict(v, request, result, committee).is_ok() {
            by_member.entry(v.verifier).or_insert(v);
        }
    }
    let rejected: Vec<Verdict> = by_member
        .values()
        .filter(|v| v.decision == Decision::Reject)
        .map(|v| (*v).clone())
        .collect();
    if !rejected.is_empty() {
        return Err(CertificateError::Rejected(rejected));
    }
    if by_member.len() < quorum.max(1) {
        return Err(CertificateError::NoQuorum {
            have: by_member.len(),
            need: quorum.max(1),
        });
    }
    Ok(Certificate {
        tag: CertificateTag,
        result: *result,
        verdicts: by_member.into_values().cloned().collect(),
    })
}

/// Checks a certificate on `result` checked against `request`: every
/// verdict valid, accepting, from a distinct member, ordered by verifier key,
/// and at least `quorum` of them.
pub fn verify_certificate(
    certificate: &Certificate,
    request: &Hash,
    result: &Hash,
    committee: &[PublicKey],
    quorum: usize,
) -> Result<(), CertificateError> {
    if certificate.result != *result {
        return Err(CertificateError::NotAcceptance);
    }
    for v in &certificate.verdicts {
        validate_verdict(v, request, result, committee)?;
        if v.decision != Decision::Accept {
            return Err(CertificateError::NotAcceptance);
        }
    }
    if certificate
        .verdicts
        .windows(2)
        .any(|w| w[0].verifier >= w[1].verifier)
    {
        return Err(CertificateError::Order);
    }
    if certificate.verdicts.len() < quorum.max(1) {
        return Err(CertificateError::NoQuorum {
            have: certificate.verdicts.len(),
            need: quorum.max(1),
        });
    }
    Ok(())
}

/// Who a dispute found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Offender {
    /// The inference node: its signed result breaks the rules.
    Node(PublicKey),
    /// A verifier on the losing side, or one that signed both ways.
    Verifier(PublicKey),
}

/// The signed records that prove a dispute's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// The disputed result, signed by its node.
    pub result: InferenceResult,
    /// The escalation committee's verdicts on the winning side.
    pub majority: Vec<Verdict>,
    /// Every valid verdict on the losing side (first round and escalation),
    /// and both verdicts of a verifier that signed both ways.
    pub losing: Vec<Verdict>,
}

/// The outcome of a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisputeOutcome {
    /// Hash of the disputed result.
    pub result: Hash,
    /// The escalation committee's majority decision.
    pub decision: Decision,
    /// Who was wrong: the node first (on reject), then verifiers by key.
    pub wrong: Vec<Offender>,
    /// The signed evidence.
    pub evidence: Evidence,
}

/// Why a dispute has no outcome (yet).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DisputeError {
    /// The disputed result's own signature does not verify (it is not the
    /// node's, so it proves nothing against it).
    #[error("the disputed result is not validly signed")]
    UnsignedResult,
    /// No strict majority of the escalation committee agrees.
    #[error("no majority: {accept} accept, {reject} reject, committee of {committee}")]
    Undecided {
        /// Valid accepting verdicts.
        accept: usize,
        /// Valid rejecting verdicts.
        reject: usize,
        /// Escalation committee size.
        committee: usize,
    },
    /// Hashing a record failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// Decides a dispute over `result`.
///
/// `earlier` are the verdicts that led to the dispute (any committee);
/// `committee` is the larger escalation committee and `escalation` its
/// verdicts. The decision is the one taken by a strict majority of the
/// escalation committee (counting each member's one valid verdict; a member
/// that signed both ways counts for neither side and is named wrong). The
/// node is wrong when the majority rejects; every verifier whose valid
/// verdict (earlier or in the escalation) differs from the majority is wrong.
/// Verdicts that do not verify or are about another result or request are
/// ignored.
pub fn resolve_dispute(
    result: &InferenceResult,
    earlier: &[Verdict],
    committee: &[PublicKey],
    escalation: &[Verdict],
) -> Result<DisputeOutcome, DisputeError> {
    if result.verify_signature().is_err() {
        return Err(DisputeError::UnsignedResult);
    }
    let hash = result.hash()?;
    // Only verdicts on the pair the result answers count: a verdict that
    // checked it against another request says nothing about the node.
    let valid = |v: &&Verdict| {
        v.result == hash && v.request == result.request && v.verify_signature().is_ok()
    };

    // Each escalation member's verdicts, to find its vote and equivocation.
    let mut votes: BTreeMap<PublicKey, Vec<&Verdict>> = BTreeMap::new();
    for v in escalation
        .iter()
        .filter(valid)
        .filter(|v| committee.contains(&v.verifier))
    {
        votes.entry(v.verifier).or_default().push(v);
    }
    let mut wrong: Vec<Offender> = Vec::new();
    let mut losing: Vec<Verdict> = Vec::new();
    let (mut accept, mut reject) = (0usize, 0usize);
    for (who, vs) in &votes {
        let first = vs[0].decision;
        if vs.iter().any(|v| v.decision != first) {
            wrong.push(Offender::Verifier(*who));
            losing.extend(vs.iter().map(|v| (*v).clone()));
        } else if first == Decision::Accept {
            accept += 1;
        } else {
            reject += 1;
        }
    }
    let mut members: Vec<&PublicKey> = committee.iter().collect();
    members.sort();
    members.dedup();
    let size = members.len();
    let decision = if accept * 2 > size {
        Decision::Accept
    } else if reject * 2 > size {
        Decision::Reject
    } else {
        return Err(DisputeError::Undecided {
            accept,
            reject,
            committee: size,
        });
    };
    let majority: Vec<Verdict> = votes
        .values()
        .filter(|vs| vs.iter().all(|v| v.decision == decision))
        .map(|vs| vs[0].clone())
        .collect();
    for v in earlier.iter().filter(valid).chain(
        votes
            .values()
            .filter(|vs| vs.iter().all(|v| v.decision == vs[0].decision))
            .map(|vs| vs[0]),
    ) {
        if v.decision != decision {
            if !wrong.contains(&Offender::Verifier(v.verifier)) {
                wrong.push(Offender::Verifier(v.verifier));
            }
            if !losing.contains(v) {
                losing.push(v.clone());
            }
        }
    }
    if decision == Decision::Reject {
        wrong.push(Offender::Node(result.node));
    }
    wrong.sort();
    Ok(DisputeOutcome {
        result: hash,
        decision,
        wrong,
        evidence: Evidence {
            result: result.clone(),
            majority,
            losing,
        },
    })
}

#[cfg(test)]
mod tests;
