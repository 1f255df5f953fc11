//! The slash rule as a pure function over evidence and the registry
//! (docs/design.md, "Settlement"): the ledger's state machine applies it to
//! `Slash` and `Challenge` transactions and verifiers apply it before they
//! co-sign a slash on an EVM chain, so both refuse the same evidence.
//!
//! A committee is judged at its Result's anchor: the `Commit` that fixed
//! the Result's committee seed, just before the commitments log signed the
//! checkpoint that first includes it. Evidence proves a fault when the
//! signed Request and the signed Result that answers it were rejected, for
//! a reason the node is answerable for ([`NODE_FAULT_CODES`]), by distinct
//! verifiers other than the accused that were registered at the anchor (the
//! eligible set: the public draw picks the first committee from it, the
//! escalation asks all of it), at least `dispute_quorum` of them and a
//! strict majority of the eligible set. Verifiers registered after the
//! anchor never count, so no stake registered once a Result is known can
//! sit on its committee; and no minority of the eligible set can make one.

use std::collections::BTreeSet;

use verinfer_types::records::{Decision, NODE_FAULT_CODES};
use verinfer_types::{PublicKey, Record, RecordError};

use crate::state::{Anchor, State};
use crate::tx::Evidence;

/// Why evidence proves no fault.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The Result does not answer the Request in the evidence.
    #[error("the result does not answer the evidence's request")]
    NotAnswer,
    /// The accused verifier's verdict is not an acceptance of this pair.
    #[error("the accused verdict does not accept this result for this request")]
    NotAcceptance,
    /// A committee verdict is about another request or result.
    #[error("a committee verdict by {0} is about another request or result")]
    OtherPair(Box<PublicKey>),
    /// A committee verdict does not reject for a node fault.
    #[error(
        "the committee verdict by {0} does not reject for a node fault (one of {codes})",
        codes = NODE_FAULT_CODES.join(", ")
    )]
    NotFault(Box<PublicKey>),
    /// A committee member is the accused.
    #[error("committee member {0} is the accused")]
    NotMember(Box<PublicKey>),
    /// No `Commit` anchors the Result's committee.
    #[error("the result {0} was never committed: no checkpoint anchors its committee")]
    NotCommitted(Box<verinfer_types::Hash>),
    /// Too few distinct eligible members.
    #[error(
        "{members} distinct rejecting verifiers registered at the result's commitment \
         (rejections by {ignored} other keys count for nothing); a slash needs at least {dispute_quorum} \
         and a strict majority of the {registered} verifiers registered then"
    )]
    TooFew {
        /// Distinct rejecting members that count.
        members: usize,
        /// Rejections by keys not registered at the anchor.
        ignored: usize,
        /// The dispute quorum.
        dispute_quorum: u32,
        /// Verifiers registered at the anchor.
        registered: usize,
    },
    /// A record could not be encoded.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The verifiers eligible for the committee of the Result `result`: those
/// registered at its anchor ([`State::verifiers_at`]).
pub fn eligible_verifiers(
    state: &State,
    result: &verinfer_types::Hash,
) -> Result<(Anchor, BTreeSet<PublicKey>), EvidenceError> {
    let anchor = state
        .commits
        .get(result)
        .ok_or_else(|| EvidenceError::NotCommitted(Box::new(*result)))?;
    Ok((*anchor, state.verifiers_at(anchor)))
}

/// Checks `evidence` (whose signatures the caller verified) against the
/// `eligible` verifiers (registered at the Result's anchor); returns the
/// committee's distinct members that count. Rejections by other keys
/// (registered later, or never) count for nothing.
pub fn committee(
    evidence: &Evidence,
    eligible: &BTreeSet<PublicKey>,
    dispute_quorum: u32,
) -> Result<BTreeSet<PublicKey>, EvidenceError> {
    let (result, accepted, verdicts) = evidence.parts();
    let request = evidence.request().hash()?;
    if result.request != request {
        return Err(EvidenceError::NotAnswer);
    }
    let result_hash = result.hash()?;
    if let Some(v) = accepted {
        if v.decision != Decision::Accept || v.result != result_hash || v.request != request {
            return Err(EvidenceError::NotAcceptance);
        }
    }
    let accused = evidence.accused();
    let mut members = BTreeSet::new();
    let mut ignored = BTreeSet::new();
    for v in verdicts {
        let who = || Box::new(v.verifier);
        if v.result != result_hash || v.request != request {
            return Err(EvidenceError::OtherPair(who()));
        }
        if !v.proves_node_fault() {
            return Err(EvidenceError::NotFault(who()));
        }
        if v.verifier == accused {
            return Err(EvidenceError::NotMember(who()));
        }
        if eligible.contains(&v.verifier) {
            members.insert(v.verifier);
        } else {
            ignored.insert(v.verifier);
        }
    }
    if members.len() < dispute_quorum as usize || members.len() * 2 <= eligible.len() {
        return Err(EvidenceError::TooFew {
            members: members.len(),
            ignored: ignored.len(),
            dispute_quorum,
            registered: eligible.len(),
        });
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::World;
    use verinfer_types::records::{InferenceResult, Request, Verdict};
    use verinfer_types::{Hash, SignedRecord};

    struct Case {
        w: World,
        req: Request,
        res: InferenceResult,
    }

    fn case() -> Case {
        let w = World::new();
        let req = w.request(&w.users[0], 1, 1);
        let res = w.result(&req, 0);
        Case { w, req, res }
    }

    impl Case {
        fn eligible(&self) -> BTreeSet<PublicKey> {
            self.w.verifiers.iter().map(|k| k.public()).collect()
        }
        fn rejections(&self, members: &[usize]) -> Vec<Verdict> {
            members
                .iter()
                .map(|&v| self.w.verdict(&self.res, v, Decision::Reject))
                .collect()
        }
        fn node(&self, committee: Vec<Verdict>) -> Evidence {
            Evidence::Node {
                request: self.req.clone(),
                result: self.res.clone(),
                committee,
            }
        }
        fn check(&self, e: &Evidence) -> Result<BTreeSet<PublicKey>, EvidenceError> {
            committee(e, &self.eligible(), 2)
        }
    }

    #[test]
    fn a_majority_of_registered_verifiers_proves_a_node_fault() {
        let c = case();
        let e = c.node(c.rejections(&[0, 1, 2]));
        assert_eq!(c.check(&e).map(|m| m.len()), Ok(3));
    }

    #[test]
    fn a_minority_committee_is_refused() {
        // dispute_quorum 2 is met, but 2 of 4 registered is no majority;
        // repeating a member adds nothing.
        let c = case();
        let mut verdicts = c.rejections(&[0, 1]);
        verdicts.push(verdicts[0].clone());
        assert!(matches!(
            c.check(&c.node(verdicts)),
            Err(EvidenceError::TooFew { members: 2, .. })
        ));
    }

    #[test]
    fn a_member_not_eligible_counts_for_nothing() {
        // Two of the four eligible and one key that was not registered at
        // the anchor (an outsider, or a verifier registered later): no
        // majority.
        let c = case();
        let mut verdicts = c.rejections(&[0, 1]);
        let outsider = verinfer_types::testing::key(200);
        let mut v = verdicts[0].clone();
        v.verifier = outsider.public();
        v.sign(&outsider).expect("signs");
        verdicts.push(v);
        assert!(matches!(
            c.check(&c.node(verdicts)),
            Err(EvidenceError::TooFew {
                members: 2,
                ignored: 1,
                registered: 4,
                ..
            })
        ));
    }

    #[test]
    fn non_fault_codes_are_refused() {
        let c = case();
        for reason in [
            "schema: not an integer",
            "wrong_engine: x",
            "bad_request: x",
            "wrong_request: x",
            "bad_signature: x",
        ] {
            let mut verdicts = c.rejections(&[0, 1, 2]);
            let v = &mut verdicts[1];
            v.reason = Some(reason.into());
            v.sign(&c.w.verifiers[1]).expect("signs");
            assert!(
                matches!(c.check(&c.node(verdicts)), Err(EvidenceError::NotFault(_))),
                "{reason}"
            );
        }
    }

    #[test]
    fn a_mismatched_request_is_refused() {
        let c = case();
        // Another request with the same result: the result does not answer it.
        let other = c.w.request(&c.w.users[0], 2, 1);
        let e = Evidence::Node {
            request: other.clone(),
            result: c.res.clone(),
            committee: c.rejections(&[0, 1, 2]),
        };
        assert_eq!(c.check(&e), Err(EvidenceError::NotAnswer));
        // Verdicts that checked the result against another request.
        let mut verdicts = c.rejections(&[0, 1, 2]);
        verdicts[2].request = Hash::of(b"another request");
        verdicts[2].sign(&c.w.verifiers[2]).expect("signs");
        assert!(matches!(
            c.check(&c.node(verdicts)),
            Err(EvidenceError::OtherPair(_))
        ));
    }

    #[test]
    fn a_verifier_is_accused_by_its_acceptance_of_the_same_pair() {
        let c = case();
        let liar = c.w.verdict(&c.res, 3, Decision::Accept);
        let e = Evidence::Verifier {
            request: c.req.clone(),
            result: c.res.clone(),
            verdict: Box::new(liar.clone()),
            committee: c.rejections(&[0, 1, 2]),
        };
        assert_eq!(c.check(&e).map(|m| m.len()), Ok(3));
        // The accused cannot sit on its own committee.
        let e = Evidence::Verifier {
            request: c.req.clone(),
            result: c.res.clone(),
            verdict: Box::new(liar),
            committee: c.rejections(&[0, 1, 3]),
        };
        assert_eq!(
            c.check(&e),
            Err(EvidenceError::NotMember(Box::new(
                c.w.verifiers[3].public()
            )))
        );
    }
}
