//! Verifiers watch optimistic answers during their challenge window
//! (docs/design.md, "Optimistic answers and challenges"), without the
//! gateway that served them: a gateway colluding with its node would never
//! challenge.
//!
//! Every [`WATCH_INTERVAL`] the verifier reads the answers still inside
//! their window from the ledger (`GET /ledger/provisional`, open to
//! registered verifiers only), and for each one it has not looked at yet:
//! the eligible set is the verifiers registered at the Result's anchor
//! (`GET /ledger/anchor/{result}`); the public draw
//! ([`verinfer_verify::committee::watchers`]) says whether this verifier
//! watches it. A watcher checks the answer; on a rejection for a node fault
//! it asks every other eligible verifier to check it too, and when their
//! node-fault rejections make a committee the slash rule accepts
//! ([`verinfer_ledger::slashing::committee`]) it sends the `Challenge`.
//! Several watchers may challenge the same answer: the ledger takes the
//! first and refuses the others with a reason, which is no error here.

use super::VerifierNode;
use crate::auth::now_ms;
use crate::client::{ClientError, LedgerClient, Peer};
use crate::wire::{CheckRequest, ProvisionalView, PROVISIONAL_PAGE};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use verinfer_ledger::slashing::committee;
use verinfer_ledger::tx::{Evidence, Role, TxBody};
use verinfer_types::records::Verdict;
use verinfer_types::sync::lock;
use verinfer_types::{Hash, PublicKey, Record, SignedRecord};
use verinfer_verify::committee::watchers;

/// How often the ledger is asked for answers to watch.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Answers watched at once (each holds a checker while it checks).
const AT_ONCE: usize = 4;
/// Longest wait for another verifier's verdict.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

/// What one watched answer came to.
#[derive(Debug, PartialEq, Eq)]
enum Watched {
    /// Not drawn to watch it, or not this verifier's model.
    NotMine,
    /// Checked and accepted, or rejected for no node fault.
    Honest,
    /// Rejected, but too few eligible verifiers agreed to challenge.
    NoCommittee,
    /// Challenged (or another watcher's challenge was taken first).
    Challenged,
}

impl VerifierNode {
    /// Watches the ledger's provisional answers every `every`; runs until
    /// the task is dropped.
    pub async fn watch_loop(self: Arc<Self>, every: Duration) {
        // Positions looked at (or being looked at) and still listed.
        let taken: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let turns = Arc::new(tokio::sync::Semaphore::new(AT_ONCE));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ledger) = self.ledger().cloned() else {
                continue;
            };
            let listed = match open_answers(&ledger).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot list provisional answers");
                    continue;
                }
            };
            let positions: HashSet<u64> = listed.iter().map(|a| a.position).collect();
            lock(&taken).retain(|p| positions.contains(p));
            for answer in listed {
                if !lock(&taken).insert(answer.position) {
                    continue;
                }
                let (node, ledger, taken) = (self.clone(), ledger.clone(), taken.clone());
                let turns = turns.clone();
                tokio::spawn(async move {
                    let Ok(_turn) = turns.acquire().await else {
                        return;
                    };
                    let position = answer.position;
                    match node.watch_one(&ledger, answer).await {
                        Ok(w) => {
                            tracing::debug!(position, outcome = ?w, "provisional answer watched")
                        }
                        Err(e) => {
                            // Looked at again on the next tick.
                            tracing::warn!(position, error = %e, "provisional answer not watched yet");
                            lock(&taken).remove(&position);
                        }
                    }
                });
            }
        }
    }

    /// Watches one answer: checks it if drawn, escalates a node-fault
    /// rejection, challenges when the committee is reached.
    async fn watch_one(
        &self,
        ledger: &LedgerClient,
        answer: ProvisionalView,
    ) -> anyhow::Result<Watched> {
        if now_ms() >= answer.until_ms {
            return Ok(Watched::NotMine);
        }
        let hash = answer.result.hash()?;
        let Some(anchor) = ledger.anchor(&hash).await? else {
            // Never committed: no committee can be judged, no challenge.
            return Ok(Watched::NotMine);
        };
        let me = self.key().public();
        let params = ledger.params().await?.params;
        let drawn = watchers(
            &anchor.eligible,
            answer.seed.as_ref(),
            params.quorum as usize,
        );
        if !drawn.contains(&me) || answer.result.node == me {
            return Ok(Watched::NotMine);
        }
        let pair = CheckRequest {
            request: answer.request.clone(),
            result: answer.result.clone(),
        };
        // A model this verifier does not check is not its to watch.
        let Some((checkers, _)) = self.checkers.get(&pair.request.model) else {
            return Ok(Watched::NotMine);
        };
        let mine = match checkers.verdict(pair.clone()).await {
            Ok(v) => v,
            Err(e) => anyhow::bail!("check: {}", e.1),
        };
        if !mine.proves_node_fault() {
            return Ok(Watched::Honest);
        }
        tracing::info!(result = %hash, reason = ?mine.reason, "a watched answer is rejected; asking the other eligible verifiers");
        let eligible: BTreeSet<PublicKey> = anchor.eligible.iter().copied().collect();
        let others: Vec<(PublicKey, String)> = ledger
            .nodes()
            .await?
            .into_iter()
            .filter(|n| {
                n.role == Role::Verifier
                    && n.key != me
                    && n.key != answer.result.node
                    && eligible.contains(&n.key)
            })
            .map(|n| (n.key, n.endpoint))
            .collect();
        let body = serde_json::to_vec(&pair)?;
        let peer = ledger.peer();
        let asked = others
            .iter()
            .map(|(key, endpoint)| ask(peer, key, endpoint, body.clone(), &pair, &hash));
        let mut faults: Vec<Verdict> = futures_util::future::join_all(asked)
            .await
            .into_iter()
            .flatten()
            .filter(Verdict::proves_node_fault)
            .collect();
        faults.push(mine);
        let evidence = Evidence::Node {
            request: answer.request,
            result: answer.result,
            committee: faults,
        };
        if let Err(e) = committee(&evidence, &eligible, params.dispute_quorum) {
            tracing::warn!(result = %hash, error = %e, "a watched answer is rejected without a committee; not challenged");
            return Ok(Watched::NoCommittee);
        }
        let body = TxBody::Challenge {
            evidence: Box::new(evidence),
        };
        match ledger.submit_as(self.key(), body).await {
            Ok(_) => {
                tracing::info!(result = %hash, "provisional answer challenged and overturned");
                Ok(Watched::Challenged)
            }
            // Another watcher's challenge came first: the answer is overturned.
            Err(ClientError::Refused(r)) if r.error.contains("already overturned") => {
                tracing::info!(result = %hash, "provisional answer already overturned");
                Ok(Watched::Challenged)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Every answer inside its window, page by page.
async fn open_answers(ledger: &LedgerClient) -> Result<Vec<ProvisionalView>, ClientError> {
    let mut all: Vec<ProvisionalView> = Vec::new();
    loop {
        let page = ledger.provisional(all.last().map(|a| a.position)).await?;
        let full = page.len() >= PROVISIONAL_PAGE;
        all.extend(page);
        if !full {
            return Ok(all);
        }
    }
}

/// `key`'s verdict on the pair, if it answers with one it signed on it.
async fn ask(
    peer: &Peer,
    key: &PublicKey,
    endpoint: &str,
    body: Vec<u8>,
    pair: &CheckRequest,
    hash: &Hash,
) -> Option<Verdict> {
    let resp = peer
        .post(key, endpoint, "/verifier/check", body, CHECK_TIMEOUT)
        .await
        .map_err(|e| tracing::warn!(verifier = %key, error = %e, "verifier failed a watch check"))
        .ok()?;
    let v: Verdict = crate::client::json(endpoint.to_string(), resp).await.ok()?;
    (v.verifier == *key
        && v.result == *hash
        && v.request == pair.result.request
        && v.verify_signature().is_ok())
    .then_some(v)
}
