//! Watching optimistic answers during their challenge window
//! (docs/design.md, "Optimistic answers and challenges").
//!
//! An `optimistic(window)` answer is settled at once, its fee held by the
//! ledger. Right after, the verifier the public rule draws for the Result
//! (round 0 of its committee seed, the same draw a `quorum(1)` check makes)
//! re-checks it, the next one in the ranking if it fails. A rejection for a
//! node fault goes to every other live verifier; when a strict majority of
//! those asked rejects for a node fault, the gateway sends a `Challenge` with
//! their verdicts, which the ledger judges by the slash rule. Everything here
//! runs after the client has its answer.

use super::directory::Member;
use super::settle::Settler;
use crate::client::Peer;
use crate::wire::CheckRequest;
use std::time::Duration;
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
        let keys: Vec<PublicKey> = self.verifiers.iter().map(|m| m.view.key).collect();
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
        // Escalate: every other live verifier checks the same pair.
        let rest: Vec<&Member> = self
            .verifiers
            .iter()
            .filter(|m| m.view.key != first.verifier)
            .collect();
        let mut verdicts = vec![first];
        let answers = futures_util::future::join_all(rest.iter().map(|m| self.ask(m, &hash))).await;
        verdicts.extend(answers.into_iter().flatten());
        let faults: Vec<Verdict> = verdicts
            .iter()
            .filter(|v| v.proves_node_fault())
            .cloned()
            .collect();
        if faults.len() * 2 <= verdicts.len() {
            tracing::warn!(result = %hash, faults = faults.len(), asked = verdicts.len(), "optimistic answer rejected by a minority; not challenged");
            return;
        }
        let body = TxBody::Challenge {
            evidence: Box::new(Evidence::Node {
                request: self.request.clone(),
                result: self.result.clone(),
                committee: faults,
            }),
        };
        match self.settler.signer().submit(body).await {
            Ok(_) => {
                tracing::info!(node = %self.result.node, result = %hash, "optimistic answer challenged and overturned")
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
