//! Watching optimistic answers during their challenge window
//! (docs/design.md, "Optimistic answers and challenges").
//!
//! An `optimistic(window)` answer is settled at once, its fee held by the
//! ledger. Right after, the verifier the public rule draws for the Result
//! (round 0 of its committee seed, the same draw a `quorum(1)` check makes)
//! re-checks it, the next one in the ranking if it fails. A rejection for a
//! node fault goes to every other live verifier registered at the Result's
//! anchor (only they count); when their node-fault rejections make a
//! committee the slash rule accepts, the gateway sends a `Challenge` with
//! their verdicts. Everything here runs after the client has its answer.
//! The verifiers watch the same answers on their own
//! (`roles::verifier::watch`): whichever challenges first overturns it.

use super::directory::Member;
use super::settle::Settler;
use crate::client::{ClientError, LedgerClient, Peer};
use crate::wire::CheckRequest;
use std::collections::BTreeSet;
use std::time::Duration;
use verinfer_ledger::slashing::committee;
use verinfer_ledger::tx::{Evidence, TxBody};
use verinfer_types::records::{InferenceResult, Request, Verdict};
use verinfer_types::{Hash, PublicKey, Record, SignedRecord};
use verinfer_verify::committee::select;

/// Longest wait for one verdict.
const CHECK_TIMEOUT: Duration = Duration::from_secs(300);
/// Drawn verifiers tried in turn before the watch gives up on the first look.
const FIRST_TRIES: usize = 3;

/// One optimistic answer to re-check.
pub(super) struct Watch {
    /// Signs the checks.
    pub peer: Peer,
    /// Reads the Result's anchor and the dispute quorum.
    pub ledger: LedgerClient,
    /// Sends the challenge.
    pub settler: Settler,
    /// Verifiers live for the model when the answer was settled.
    pub verifiers: Vec<Member>,
    /// The request.
    pub request: Request,
    /// The settled Result.
    pub result: InferenceResult,
    /// The Result's committee seed.
    pub seed: Hash,
}

impl Watch {
    /// Re-checks the answer; challenges it when a majority proves a fault.
    pub(super) async fn run(self) {
        let Ok(hash) = self.result.hash() else {
            return;
        };
        // Only verifiers registered at the anchor count for a challenge.
        let (eligible, dispute_quorum) = match (
            self.ledger.anchor(&hash).await,
            self.ledger.params().await,
        ) {
            (Ok(Some(a)), Ok(p)) => (
                a.eligible.into_iter().collect::<BTreeSet<_>>(),
                p.params.dispute_quorum,
            ),
            _ => {
                tracing::warn!(result = %hash, "cannot read the anchor of an optimistic answer");
                return;
            }
        };
        let keys: Vec<PublicKey> = self
            .verifiers
            .iter()
            .map(|m| m.view.key)
            .filter(|k| eligible.contains(k))
            .collect();
        let ranking = select(&keys, keys.len(), &self.seed, 0);
        let by_key = |k: &PublicKey| self.verifiers.iter().find(|m| m.view.key == *k);
        let mut first = None;
        for key in ranking.iter().take(FIRST_TRIES) {
            let Some(m) = by_key(key) else { continue };
            if let Some(v) = self.ask(m, &hash).await {
                first = Some(v);
                break;
            }
        }
        let Some(first) = first else {
            tracing::warn!(result = %hash, "no verifier re-checked an optimistic answer");
            return;
        };
        if !first.proves_node_fault() {
            return;
        }
        // Escalate: every other live eligible verifier checks the same pair.
        let rest: Vec<&Member> = self
            .verifiers
            .iter()
            .filter(|m| m.view.key != first.verifier && eligible.contains(&m.view.key))
            .collect();
        let mut verdicts = vec![first];
        let answers = futures_util::future::join_all(rest.iter().map(|m| self.ask(m, &hash))).await;
        verdicts.extend(answers.into_iter().flatten());
        let faults: Vec<Verdict> = verdicts
            .iter()
            .filter(|v| v.proves_node_fault())
            .cloned()
            .collect();
        let evidence = Evidence::Node {
            request: self.request.clone(),
            result: self.result.clone(),
            committee: faults,
        };
        if let Err(e) = committee(&evidence, &eligible, dispute_quorum) {
            tracing::warn!(result = %hash, error = %e, asked = verdicts.len(), "optimistic answer rejected without a committee; not challenged");
            return;
        }
        let body = TxBody::Challenge {
            evidence: Box::new(evidence),
        };
        match self.settler.signer().submit(body).await {
            Ok(_) => {
                tracing::info!(node = %self.result.node, result = %hash, "optimistic answer challenged and overturned")
            }
            // A verifier watching it challenged first.
            Err(ClientError::Refused(r)) if r.error.contains("already overturned") => {
                tracing::info!(result = %hash, "optimistic answer already overturned")
            }
            Err(e) => tracing::warn!(node = %self.result.node, error = %e, "challenge refused"),
        }
    }

    /// `m`'s verdict on the pair, if it answers with one it signed on it.
    async fn ask(&self, m: &Member, hash: &Hash) -> Option<Verdict> {
        let body = serde_json::to_vec(&CheckRequest {
            request: self.request.clone(),
            result: self.result.clone(),
        })
        .ok()?;
        let resp = self
            .peer
            .post(
                &m.view.key,
                &m.view.endpoint,
                "/verifier/check",
                body,
                CHECK_TIMEOUT,
            )
            .await
            .map_err(|e| tracing::warn!(verifier = %m.view.key, error = %e, "verifier failed a watch check"))
            .ok()?;
        let v: Verdict = crate::client::json(m.view.endpoint.clone(), resp)
            .await
            .ok()?;
        (v.verifier == m.view.key
            && v.result == *hash
            && v.request == self.result.request
            && v.verify_signature().is_ok())
        .then_some(v)
    }
}
