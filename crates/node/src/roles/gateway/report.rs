//! What the gateway sees of one API call that the ledger's transactions do
//! not show (results rejected per node, verifier tasks missed), gathered
//! while the call runs and sent to the ledger once at its end, so that the
//! ledger counts the call once whatever its retries.
//!
//! The notes live in a task-local scope around the call: the places that
//! see a rejection or a missed task note it without threading a collector
//! through every step of the flow.

use crate::wire::Report;
use std::cell::RefCell;
use std::future::Future;
use verinfer_types::{Hash, PublicKey};

/// Tries to send a report (waits from 0.2 s doubling to 10 s between them,
/// over 20 s in all: enough to outlast a ledger restart).
pub(super) const ATTEMPTS: u32 = 8;

tokio::task_local! {
    static NOTES: RefCell<Report>;
}

/// Runs `call` (API call `id`) collecting its notes; returns its output and
/// the report of what was noted.
pub(super) async fn tracked<F: Future>(id: Hash, call: F) -> (F::Output, Report) {
    let empty = Report {
        call: id,
        rejected: false,
        node_rejections: Vec::new(),
        missed: Vec::new(),
    };
    NOTES
        .scope(RefCell::new(empty), async move {
            let out = call.await;
            let report = NOTES.with(|n| n.borrow().clone());
            (out, report)
        })
        .await
}

/// The verifiers rejected `node`'s Result in the current call.
pub(super) fn node_rejected(node: PublicKey) {
    // Outside a tracked call (none today) there is no call to count it in.
    let _ = NOTES.try_with(|n| n.borrow_mut().node_rejections.push(node));
}

/// `verifier` gave no verdict on a check in the current call.
pub(super) fn missed(verifier: PublicKey) {
    let _ = NOTES.try_with(|n| n.borrow_mut().missed.push(verifier));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_of_a_call_stay_with_it() {
        let k = |i: u8| verinfer_types::SecretKey::from_seed(&[i; 32]).public();
        let (out, r) = tracked(Hash([1; 32]), async {
            node_rejected(k(1));
            futures_util::future::join_all((2..4).map(|i| async move { missed(k(i)) })).await;
            node_rejected(k(4));
            7
        })
        .await;
        assert_eq!(out, 7);
        assert_eq!(r.call, Hash([1; 32]));
        assert_eq!(r.node_rejections, vec![k(1), k(4)]);
        assert_eq!(r.missed, vec![k(2), k(3)]);
        // Outside a call, nothing is noted and nothing fails.
        node_rejected(k(5));
    }
}
