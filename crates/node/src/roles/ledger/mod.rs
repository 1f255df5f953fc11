//! The ledger role: the embedded ledger and its receipts log over HTTP.
//!
//! - `POST /ledger/tx`: a signed transaction; answered once durable (409 with
//!   the reason when refused; nothing changes then);
//! - `GET /ledger/account/{key}`, `/ledger/nodes`, `/ledger/params`,
//!   `/v1/ledger/summary`: state reads;
//! - `GET /ledger/receipts/{id}`: a receipt's leaf with its inclusion proof
//!   and the latest final checkpoint ([`ReceiptBundle`]); the receipt's text
//!   only to a read signed by its requester;
//! - `GET /ledger/provisional?after=N&limit=M` (a read signed by a
//!   registered verifier, 403 for anyone else: answers hold user text): the
//!   optimistic answers inside their window, with their signed Request and
//!   Result, by leaf position after `N` ([`crate::wire::ProvisionalView`]);
//! - `/log/...`: the receipts log as C2SP tlog-tiles; `/log/checkpoint` is the
//!   latest *cosigned* checkpoint.
//!
//! Verifiers are the log's witnesses: while the log grows, the role signs a
//! checkpoint and asks every registered verifier to cosign it with the C2SP
//! tlog-witness `add-checkpoint` call (old size, consistency proof,
//! checkpoint). Each reply is checked on its own ([`own_cosignature`]): only
//! a line under that witness's own name that verifies is kept, anything else
//! is dropped and counted (`GET /metrics`:
//! `verinfer_cosignatures_refused_total`), so no witness can stop another's
//! cosignature from counting. A checkpoint with `witness_quorum` valid
//! cosignatures is final: it is stored durably and served.

pub mod evm;
pub mod explorer;
mod routes;

use crate::auth::now_ms;
use crate::chronicle::Chronicle;
use crate::client::Peer;
use crate::http::{blocking, Admits, HttpError, Signed};
use crate::wire::{
    AccountView, EscrowView, NodeInfo, NodeView, ParamsView, SummaryView, TxApplied, TxRefused,
};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use verinfer_ledger::state::TxError;
use verinfer_ledger::tx::{Role, Transaction, TxBody};
use verinfer_ledger::{Ledger, LedgerError};
use verinfer_log::checkpoint::Checkpoint;
use verinfer_log::witness::verify_cosignature;
use verinfer_types::note::{Note, NoteSignature, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::records::{Finality, Receipt, VerificationMode};
use verinfer_types::sync::lock;
use verinfer_types::{Hash, PublicKey, Record};
use verinfer_verify::receipt::{witness_name, ReceiptBundle};

/// File (in the ledger directory) holding the latest final checkpoint.
const COSIGNED_FILE: &str = "cosigned-checkpoint";
pub use crate::wire::MAX_TX_BYTES;

/// A checkpoint note with enough cosignatures, and its size.
#[derive(Clone, Debug)]
struct Final {
    note: String,
    size: u64,
}

/// The ledger role's state.
pub struct LedgerNode {
    pub(crate) ledger: Arc<Ledger>,
    dir: PathBuf,
    key: PublicKey,
    witness_quorum: u32,
    cosigned: RwLock<Option<Final>>,
    /// Each witness's last cosigned size, as far as we know.
    witness_sizes: Mutex<HashMap<PublicKey, u64>>,
    peer: Peer,
    /// Activity over time, for the explorer (rebuilt from the WAL and the
    /// gateways' reports on open).
    pub(crate) chronicle: Chronicle,
    /// Every final checkpoint, for the explorer (`{"time_ms", "note"}` entries).
    pub(crate) checkpoints: verinfer_log::Log,
    /// Commitments to Results before they are checked: the checkpoint that
    /// first includes one, signed by this log's key, is the randomness that
    /// draws the Result's verifiers.
    commitments: verinfer_log::Log,
    /// Each Result's committee seed from its first commitment, with the
    /// wall time it was drawn: the watchers' draw (pruned after the longest
    /// window; lost on restart, when every eligible verifier watches).
    seeds: Mutex<HashMap<Hash, (Hash, u64)>>,
    /// Keys (gateways) whose reports of rejections and missed tasks count.
    reporters: Vec<PublicKey>,
    gate: crate::auth::Gate,
    /// Settles on a chain when the EVM backend is configured.
    settler: std::sync::OnceLock<Arc<verinfer_ledger::evm::settler::Settler>>,
    /// Witness replies dropped: malformed, or without a valid cosignature
    /// under the witness's own name.
    cosignatures_refused: AtomicU64,
}

impl LedgerNode {
    /// The role around an open ledger in `dir`, with node key `key` (used to
    /// authenticate its calls to witnesses); the explorer's minutes are
    /// `minute_ms` wide ([`crate::chronicle::MINUTE_MS`] but in tests).
    pub fn new(
        ledger: Arc<Ledger>,
        dir: PathBuf,
        key: verinfer_types::SecretKey,
        witness_quorum: u32,
        reporters: Vec<PublicKey>,
        minute_ms: u64,
    ) -> anyhow::Result<Arc<Self>> {
        let open_or_init = |name: &str, origin: &str| -> anyhow::Result<verinfer_log::Log> {
            let d = dir.join(name);
            Ok(if d.join("config.json").exists() {
                verinfer_log::Log::open(&d)?
            } else {
                verinfer_log::Log::init(&d, origin)?
            })
        };
        let checkpoints = open_or_init("checkpoints", "verinfer.local/checkpoint-history")?;
        let commitments = open_or_init("commitments", "verinfer.local/result-commitments")?;
        let cosigned = match std::fs::read_to_string(dir.join(COSIGNED_FILE)) {
            Ok(note) => {
                let n = Note::parse(&note)?;
                let size = Checkpoint::parse_text(&n.text)?.size;
                Some(Final { note, size })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let chronicle = Chronicle::open(&dir, minute_ms)?;
        chronicle.replay(&ledger)?;
        let gate = crate::auth::Gate::open(key.public(), &dir)?;
        Ok(Arc::new(LedgerNode {
            ledger,
            key: key.public(),
            witness_quorum,
            cosigned: RwLock::new(cosigned),
            witness_sizes: Mutex::new(HashMap::new()),
            peer: Peer::new(key),
            chronicle,
            checkpoints,
            commitments,
            seeds: Mutex::default(),
            reporters,
            gate,
            settler: std::sync::OnceLock::new(),
            cosignatures_refused: AtomicU64::new(0),
            dir,
        }))
    }

    /// Kept for stop paths: there is nothing to write, the explorer's
    /// counts are rebuilt from durable logs.
    pub fn flush(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// The ledger directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The chain settler, when value settles on a chain.
    pub fn settler(&self) -> Option<&Arc<verinfer_ledger::evm::settler::Settler>> {
        self.settler.get()
    }

    /// Settles on a chain from now on: every final checkpoint and every
    /// slash, every `interval`.
    pub fn settle_on_chain(
        self: &Arc<Self>,
        settler: Arc<verinfer_ledger::evm::settler::Settler>,
        interval: Duration,
    ) -> anyhow::Result<tokio::task::JoinHandle<()>> {
        self.settler
            .set(settler.clone())
            .map_err(|_| anyhow::anyhow!("the ledger already settles on a chain"))?;
        let node = Arc::downgrade(self);
        let latest = move || {
            let n = node.upgrade()?;
            let f = n
                .cosigned
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()?;
            Some(verinfer_ledger::evm::settler::FinalCheckpoint {
                note: f.note,
                size: f.size,
            })
        };
        Ok(tokio::spawn(settler.run(latest, interval)))
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// The registered nodes with their liveness.
    pub fn node_views(&self) -> Vec<NodeView> {
        let seen = self.chronicle.with(|t| t.last_seen().clone());
        self.ledger.with_state(|s| {
            s.nodes
                .iter()
                .map(|(k, n)| NodeView {
                    key: *k,
                    role: n.role,
                    endpoint: n.endpoint.clone(),
                    stake: s.stake(k),
                    registered: n.registered,
                    last_heartbeat: n.last_heartbeat,
                    last_seen_ms: seen.get(k).copied().unwrap_or(0),
                    models: n.models.iter().copied().collect(),
                })
                .collect()
        })
    }

    /// Ok for a registered gateway; 403 for anyone else.
    fn require_gateway(&self, key: &PublicKey) -> Result<(), HttpError> {
        let ok = self
            .ledger
            .with_state(|s| s.nodes.get(key).is_some_and(|n| n.role == Role::Gateway));
        if ok {
            Ok(())
        } else {
            Err(HttpError::forbidden(format!(
                "{key} is not a gateway registered in this ledger"
            )))
        }
    }

    fn witnesses(&self) -> Vec<(PublicKey, String)> {
        self.ledger.with_state(|s| {
            s.nodes
                .iter()
                .filter(|(_, n)| n.role == Role::Verifier)
                .map(|(k, n)| (*k, n.endpoint.clone()))
                .collect()
        })
    }

    /// Where a settled optimistic answer stands (provisional, final or
    /// overturned); None for the other modes. Final once paid out.
    pub fn finality(&self, receipt: &Receipt) -> Result<Option<Finality>, LedgerError> {
        Ok(match receipt.request.policy.verification {
            VerificationMode::Optimistic { .. } => Some(
                self.ledger
                    .finality(&receipt.request.hash()?)
                    .unwrap_or(Finality::Final),
            ),
            _ => None,
        })
    }

    /// The receipt `id` with its proof against the latest final checkpoint.
    pub fn bundle(&self, id: &Hash) -> Result<Option<ReceiptBundle>, LedgerError> {
        let Some(index) = self.ledger.receipt_index(id) else {
            return Ok(None);
        };
        let Some(receipt) = self.ledger.receipt(index)? else {
            return Ok(None);
        };
        let log = self.ledger.receipts();
        let fin = self
            .cosigned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|f| f.size > index);
        let (checkpoint, inclusion_proof) = match fin {
            Some(f) => {
                let proof = log.inclusion_proof(index, f.size)?;
                (
                    Some(f.note),
                    proof.iter().map(|h| B64.encode(h.0)).collect(),
                )
            }
            None => (None, Vec::new()),
        };
        let witnesses = self
            .witnesses()
            .iter()
            .filter_map(|(k, _)| VerifierKey::new(&witness_name(k), ALG_COSIGNATURE_V1, *k).ok())
            .map(|vk| vk.to_string())
            .collect();
        Ok(Some(ReceiptBundle {
            finality: self.finality(&receipt)?,
            id: *id,
            index,
            leaf: receipt.leaf()?,
            receipt: Some(receipt),
            checkpoint,
            inclusion_proof,
            log_key: log.verifier_key().to_string(),
            witnesses,
            witness_quorum: self.witness_quorum,
        }))
    }

    /// Releases expired reservations to their payers at once (after a crash
    /// they are what is left of requests in flight) and pays out optimistic
    /// answers whose challenge window closed, then every `interval`, signed
    /// with `key`; runs until the task is dropped.
    pub async fn sweep_loop(self: Arc<Self>, key: verinfer_types::SecretKey, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (ledger, k) = (self.ledger.clone(), key.clone());
            match tokio::task::spawn_blocking(move || ledger.release_expired(&k)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(count = n, "released expired reservations"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot release expired reservations"),
                Err(e) => tracing::warn!(error = %e, "expired reservations task failed"),
            }
            // Seeds outlive every window: the longest is `dispute_window_secs`.
            let keep_ms = self
                .ledger
                .with_state(|s| s.params.dispute_window_secs.saturating_mul(1000));
            let now = now_ms();
            lock(&self.seeds).retain(|_, (_, at)| now.saturating_sub(*at) <= keep_ms);
            let (ledger, k) = (self.ledger.clone(), key.clone());
            match tokio::task::spawn_blocking(move || ledger.finalize_matured(&k)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(count = n, "finalized optimistic answers"),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot finalize optimistic answers"),
                Err(e) => tracing::warn!(error = %e, "finalize task failed"),
            }
        }
    }

    /// Signs a checkpoint when the log grew and gathers cosignatures until
    /// one is final; runs until the task is dropped.
    pub async fn cosign_loop(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.cosign_once().await {
                tracing::warn!(error = %e, "checkpoint not cosigned this round");
            }
        }
    }

    async fn cosign_once(&self) -> anyhow::Result<()> {
        let log = self.ledger.receipts().clone();
        let done = self
            .cosigned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, |f| f.size);
        if log.size() <= done {
            return Ok(());
        }
        let l = log.clone();
        let signed = tokio::task::spawn_blocking(move || l.checkpoint()).await??;
        let note_text = signed.note.to_string();
        let size = signed.checkpoint.size;
        let calls = self.witnesses().into_iter().map(|(key, endpoint)| {
            let note_text = note_text.clone();
            let log = log.clone();
            async move {
                let r = self
                    .ask_witness(&key, &endpoint, &note_text, size, &log)
                    .await;
                (key, r)
            }
        });
        let answers = futures_util::future::join_all(calls).await;
        let mut note = signed.note.clone();
        let mut count = 0u32;
        for (key, answer) in answers {
            let lines = match answer {
                Ok(l) => l,
                Err(e) => {
                    tracing::debug!(witness = %key, error = %e, "no cosignature");
                    continue;
                }
            };
            let (sig, dropped) = match own_cosignature(&signed.note, &key, &lines) {
                Ok(r) => (r.cosignature, r.dropped),
                Err(why) => {
                    tracing::warn!(witness = %key, why, "witness reply dropped");
                    (None, 1)
                }
            };
            if dropped > 0 {
                tracing::warn!(witness = %key, dropped, "witness reply lines dropped");
                self.cosignatures_refused
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
            if let Some(sig) = sig {
                note.signatures.push(sig);
                count += 1;
            }
        }
        if count < self.witness_quorum {
            anyhow::bail!(
                "{count} of {} cosignatures needed for size {size}",
                self.witness_quorum
            );
        }
        let text = note.to_string();
        let dir = self.dir.clone();
        let t = text.clone();
        tokio::task::spawn_blocking(move || {
            verinfer_log::write_atomic(&dir, COSIGNED_FILE, t.as_bytes())
        })
        .await??;
        let entry = serde_json::to_vec(&serde_json::json!({"time_ms": now_ms(), "note": text}))?;
        tokio::task::block_in_place(|| self.checkpoints.append(entry))?;
        *self.cosigned.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Final { note: text, size });
        Ok(())
    }

    /// One C2SP `add-checkpoint` call; returns the witness's signature lines.
    async fn ask_witness(
        &self,
        key: &PublicKey,
        endpoint: &str,
        note_text: &str,
        size: u64,
        log: &verinfer_log::Log,
    ) -> anyhow::Result<String> {
        for _ in 0..2 {
            let old = lock(&self.witness_sizes).get(key).copied().unwrap_or(0);
            let proof = if old == 0 || old >= size {
                Vec::new()
            } else {
                log.consistency_proof(old, size)?
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&B64.encode(h.0));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(note_text);
            let r = self
                .peer
                .post(
                    key,
                    endpoint,
                    "/witness/add-checkpoint",
                    body.into_bytes(),
                    Duration::from_secs(5),
                )
                .await;
            match r {
                Ok(resp) => {
                    let lines = resp.text().await?;
                    lock(&self.witness_sizes).insert(*key, size);
                    return Ok(lines);
                }
                // The witness knows another size: retry from it.
                Err(crate::client::ClientError::Status {
                    status: 409, body, ..
                }) => {
                    let theirs: u64 = body.trim().parse()?;
                    lock(&self.witness_sizes).insert(*key, theirs);
                }
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!("witness {key} did not agree on the old size")
    }
}

/// What one witness's `add-checkpoint` reply contributes.
#[derive(Debug)]
pub struct WitnessReply {
    /// Its valid cosignature under its own key name, if any.
    pub cosignature: Option<NoteSignature>,
    /// Signature lines dropped: under another name, or not verifying.
    pub dropped: usize,
}

/// The one cosignature a witness's `add-checkpoint` reply contributes to
/// `note`: a line under the witness's own key name that verifies on it.
/// Parsed and checked on its own, so a malformed reply or a line forged
/// under another witness's name only costs that reply; `Err` says why a
/// reply is malformed.
pub fn own_cosignature(
    note: &Note,
    witness: &PublicKey,
    reply: &str,
) -> Result<WitnessReply, String> {
    let vk = VerifierKey::new(&witness_name(witness), ALG_COSIGNATURE_V1, *witness)
        .map_err(|e| format!("witness key: {e}"))?;
    let mut base = note.clone();
    base.signatures.clear();
    let parsed =
        Note::parse(&format!("{base}{reply}")).map_err(|e| format!("malformed reply: {e}"))?;
    let lines = parsed.signatures.len();
    let cosignature = parsed
        .signatures
        .into_iter()
        .filter(|s| s.name == vk.name && s.key_id == vk.id())
        .find(|s| {
            let mut one = base.clone();
            one.signatures = vec![s.clone()];
            verify_cosignature(&one, &vk).is_ok()
        });
    Ok(WitnessReply {
        dropped: lines - usize::from(cosignature.is_some()),
        cosignature,
    })
}

/// `GET /metrics`: the ledger role's counters, Prometheus text format.
async fn metrics(State(node): State<Arc<LedgerNode>>) -> Response {
    let body = format!(
        "# HELP verinfer_cosignatures_refused_total Witness replies or signature lines dropped (malformed, under another name, or not verifying).\n\
         # TYPE verinfer_cosignatures_refused_total counter\n\
         verinfer_cosignatures_refused_total {}\n",
        node.cosignatures_refused.load(Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn refused(e: &TxError) -> TxRefused {
    let (code, index) = match e {
        TxError::Nonce { .. } => ("nonce", None),
        TxError::Insufficient { .. } => ("insufficient", None),
        TxError::Receipt { index, .. } => ("receipt", Some(*index)),
        TxError::Signature(_) => ("signature", None),
        _ => ("rule", None),
    };
    TxRefused {
        error: e.to_string(),
        code: code.into(),
        index,
    }
}

async fn submit(State(node): State<Arc<LedgerNode>>, body: Bytes) -> Response {
    let tx: Transaction = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return HttpError::bad_request(format!("transaction: {e}")).into_response(),
    };
    // On a chain, a payer's fees are debited from its EVM address: without
    // one, its receipts could never settle (and would hold up the others').
    if let (Some(s), TxBody::Reserve { .. }) = (node.settler(), &tx.body) {
        if s.address_of(&tx.signer).is_none() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(TxRefused {
                    code: "rule".into(),
                    error: format!(
                        "account {} has no linked EVM address: POST its link to /ledger/evm/link first",
                        tx.signer
                    ),
                    index: None,
                }),
            )
                .into_response();
        }
    }
    let n = node.clone();
    // Counted in the blocking task, which runs to its end even when the
    // client leaves: an acknowledged transaction is always counted.
    let r = match blocking(move || {
        let r = n.ledger.submit(&tx);
        if let Ok(applied) = &r {
            n.chronicle
                .transaction(applied.time_ms, applied.height, &tx, &applied.effects);
        }
        r
    })
    .await
    {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match r {
        Ok(applied) => Json(TxApplied {
            height: applied.height,
            first_leaf: applied.effects.first_leaf,
            leaves: applied.effects.leaves.len() as u64,
            proposal: applied.effects.proposal,
        })
        .into_response(),
        Err(LedgerError::Rejected(e)) => (StatusCode::CONFLICT, Json(refused(&e))).into_response(),
        Err(e) => HttpError::internal(e).into_response(),
    }
}

/// Reports count from registered gateways only, and of those only from the
/// configured reporters when some are configured.
impl Admits<crate::wire::Report> for LedgerNode {
    const WHAT: &'static str = "report";
    fn gate(&self) -> &crate::auth::Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        let r = self.require_gateway(&sender).and_then(|()| {
            if !self.reporters.is_empty() && !self.reporters.contains(&sender) {
                return Err(HttpError::forbidden("not a reporter of this ledger"));
            }
            Ok(())
        });
        std::future::ready(r)
    }
}

/// The log grows only for requests someone staked for: registered gateways.
impl Admits<crate::wire::Commit> for LedgerNode {
    const WHAT: &'static str = "commit";
    fn gate(&self) -> &crate::auth::Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        std::future::ready(self.require_gateway(&sender))
    }
}

/// `POST /ledger/report`: a gateway's report of one call (rejected answer,
/// node-level rejections, missed verifier tasks). Authenticated: only
/// registered gateways, and of those only the configured reporters when some
/// are configured. Answered once the report is durable.
async fn report(
    State(node): State<Arc<LedgerNode>>,
    Signed { body: r, .. }: Signed<crate::wire::Report>,
) -> Result<StatusCode, HttpError> {
    if r.node_rejections.len() > crate::wire::Report::MAX_NODE_REJECTIONS {
        return Err(HttpError::bad_request(format!(
            "report: node_rejections has {} entries, at most {}",
            r.node_rejections.len(),
            crate::wire::Report::MAX_NODE_REJECTIONS
        )));
    }
    if r.missed.len() > crate::wire::Report::MAX_MISSED {
        return Err(HttpError::bad_request(format!(
            "report: missed has {} entries, at most {}",
            r.missed.len(),
            crate::wire::Report::MAX_MISSED
        )));
    }
    // Acknowledged once durable: the gateway retries until then.
    let n = node.clone();
    blocking(move || n.chronicle.report(&r, now_ms()))
        .await?
        .map_err(HttpError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /ledger/commit` (authenticated, from a registered gateway: the log
/// grows only for requests someone staked for; body: its signed `Commit`
/// transaction as `{"tx": TX}`): applies it (anchoring the Result's
/// committee), appends the commitment durably and answers with the
/// signed checkpoint that first includes it (`{"index", "checkpoint"}`).
/// Nobody but this log's key can compute that note before it is signed, so
/// a node that committed to its Result cannot grind the verifiers it gets.
async fn commit(
    State(node): State<Arc<LedgerNode>>,
    Signed { sender, body: c }: Signed<crate::wire::Commit>,
) -> Result<Json<serde_json::Value>, HttpError> {
    let TxBody::Commit { result } = c.tx.body else {
        return Err(HttpError::bad_request("commit: tx must be a commit"));
    };
    if c.tx.signer != sender {
        return Err(HttpError::bad_request(
            "commit: tx must be signed by the sender",
        ));
    }
    let n = node.clone();
    let (index, note) = blocking(move || -> Result<(u64, String), HttpError> {
        // The ledger anchors the committee first (once per Result: a retry
        // keeps the first anchor), then the log signs the checkpoint that
        // draws it, so every verifier drawn was registered at the anchor.
        if n.ledger.with_state(|s| !s.commits.contains_key(&result)) {
            match n.ledger.submit(&c.tx) {
                Ok(_) => {}
                Err(_) if n.ledger.with_state(|s| s.commits.contains_key(&result)) => {}
                Err(LedgerError::Rejected(e)) => {
                    return Err(HttpError::bad_request(format!("commit: {e}")))
                }
                Err(e) => return Err(HttpError::internal(e)),
            }
        }
        let index = n
            .commitments
            .append(result.0.to_vec())
            .map_err(HttpError::internal)?;
        // A checkpoint of at least index + 1 entries (concurrent commits share one).
        let cp = n.commitments.checkpoint().map_err(HttpError::internal)?;
        let note = cp.note.to_string();
        let seed = verinfer_verify::committee::selection_seed(note.as_bytes(), &result);
        lock(&n.seeds).entry(result).or_insert((seed, now_ms()));
        Ok((index, note))
    })
    .await??;
    Ok(Json(
        serde_json::json!({ "index": index, "checkpoint": note }),
    ))
}

/// `GET /ledger/anchor/{result}`: the anchor of a committed Result and the
/// verifiers registered then (404 when it was never committed), which a
/// verifier reads before it co-signs a slash on chain.
pub(super) async fn anchor(
    State(node): State<Arc<LedgerNode>>,
    Path(result): Path<String>,
) -> Result<Json<crate::wire::AnchorView>, HttpError> {
    let result: Hash = result
        .parse()
        .map_err(|_| HttpError::bad_request("result must be 64 hex digits"))?;
    node.ledger
        .with_state(|s| verinfer_ledger::slashing::eligible_verifiers(s, &result))
        .map(|(a, eligible)| {
            Json(crate::wire::AnchorView {
                height: a.height,
                time_ms: a.time_ms,
                eligible: eligible.into_iter().collect(),
            })
        })
        .map_err(|e| HttpError::not_found(e.to_string()))
}

/// Paging of `GET /ledger/provisional`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct Page {
    /// Positions (leaf indices) after this one; from the first when absent.
    after: Option<u64>,
    /// At most this many ([`crate::wire::PROVISIONAL_PAGE`] at most).
    limit: Option<usize>,
}

/// `GET /ledger/provisional`: the optimistic answers inside their window,
/// by position, to registered verifiers only (their text is the users'):
/// the watchers re-check them without the gateway that served them.
pub(super) async fn provisional(
    State(node): State<Arc<LedgerNode>>,
    axum::extract::Query(page): axum::extract::Query<Page>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<Json<Vec<crate::wire::ProvisionalView>>, HttpError> {
    let unsigned = |e: crate::auth::AuthError| HttpError(StatusCode::UNAUTHORIZED, e.to_string());
    let signed = node
        .gate
        .verify(&method, &uri, &headers, b"")
        .map_err(unsigned)?;
    let registered = node
        .ledger
        .with_state(|s| s.nodes.get(&signed.key).map(|n| n.role) == Some(Role::Verifier));
    if !registered {
        return Err(HttpError::forbidden(format!(
            "{} is not a verifier registered in this ledger: only verifiers watch provisional answers",
            signed.key
        )));
    }
    // Admitted once: a captured read cannot be replayed.
    node.gate.admit(&signed).map_err(unsigned)?;
    let limit = page
        .limit
        .unwrap_or(crate::wire::PROVISIONAL_PAGE)
        .min(crate::wire::PROVISIONAL_PAGE);
    let after = page.after;
    let n = node.clone();
    let views = blocking(move || -> Result<_, LedgerError> {
        let mut open: Vec<(u64, u64)> = n.ledger.with_state(|s| {
            s.provisional
                .values()
                .filter(|p| after.is_none_or(|a| p.leaf > a))
                .map(|p| (p.leaf, p.until_ms))
                .collect()
        });
        open.sort_unstable();
        open.truncate(limit);
        let mut views = Vec::with_capacity(open.len());
        for (position, until_ms) in open {
            let Some(r) = n.ledger.receipt(position)? else {
                continue;
            };
            let seed = r
                .result
                .hash()
                .ok()
                .and_then(|h| lock(&n.seeds).get(&h).map(|s| s.0));
            views.push(crate::wire::ProvisionalView {
                position,
                request: r.request,
                result: r.result,
                until_ms,
                seed,
            });
        }
        Ok(views)
    })
    .await?
    .map_err(HttpError::internal)?;
    Ok(Json(views))
}

/// `GET /ledger/escrow/{request}`: the reservation of a request (404 when
/// there is none), which an inference node reads before it works.
async fn escrow(
    State(node): State<Arc<LedgerNode>>,
    Path(request): Path<String>,
) -> Result<Json<EscrowView>, HttpError> {
    let request: Hash = request
        .parse()
        .map_err(|_| HttpError::bad_request("request must be 64 hex digits"))?;
    node.ledger
        .with_state(|s| {
            s.escrow.get(&request).map(|e| EscrowView {
                payer: e.payer,
                amount: e.amount,
            })
        })
        .map(Json)
        .ok_or_else(|| HttpError::not_found(format!("no reservation for request {request}")))
}

async fn account(
    State(node): State<Arc<LedgerNode>>,
    Path(key): Path<String>,
) -> Result<Json<AccountView>, HttpError> {
    let key: PublicKey = key
        .parse()
        .map_err(|_| HttpError::bad_request("not a public key"))?;
    Ok(Json(node.ledger.with_state(|s| AccountView {
        balance: s.balance(&key),
        nonce: s.nonce(&key),
        stake: s.stake(&key),
    })))
}

async fn nodes(State(node): State<Arc<LedgerNode>>) -> Json<Vec<NodeView>> {
    Json(node.node_views())
}

async fn params(State(node): State<Arc<LedgerNode>>) -> Json<ParamsView> {
    let log_key = node.ledger.receipts().verifier_key().to_string();
    Json(node.ledger.with_state(|s| ParamsView {
        params: s.params.clone(),
        models: s.models.values().cloned().collect(),
        height: s.height,
        log_key,
        witness_quorum: node.witness_quorum,
    }))
}

async fn summary(State(node): State<Arc<LedgerNode>>) -> Json<SummaryView> {
    Json(
        node.ledger
            .with_state(|s| SummaryView::new(&s.summary(), s.height)),
    )
}

async fn info(State(node): State<Arc<LedgerNode>>) -> Json<NodeInfo> {
    Json(NodeInfo {
        key: node.key,
        role: "ledger".into(),
        models: Vec::new(),
        engine: String::new(),
        context_len: 0,
        vocab_size: 0,
        served: Vec::new(),
    })
}

/// `GET /ledger/receipts/{id}`: the leaf and its proofs to anyone; the
/// receipt itself (prompt and answer) only when the read is signed
/// (authenticated envelope, empty body) by the leaf's requester.
async fn receipt(
    State(node): State<Arc<LedgerNode>>,
    Path(id): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Result<Json<ReceiptBundle>, HttpError> {
    let id: Hash = id
        .parse()
        .map_err(|_| HttpError::bad_request("receipt id must be 64 hex digits"))?;
    let reader = if headers.contains_key(crate::auth::KEY) {
        // Admitted once: a captured read cannot be replayed for the text.
        Some(
            node.gate
                .check(&method, &uri, &headers, b"")
                .map_err(|e| HttpError(StatusCode::UNAUTHORIZED, e.to_string()))?,
        )
    } else {
        None
    };
    let n = node.clone();
    let mut bundle = blocking(move || n.bundle(&id))
        .await?
        .map_err(HttpError::internal)?
        .ok_or_else(|| HttpError::not_found(format!("no receipt {id}")))?;
    if reader != Some(bundle.leaf.requester) {
        bundle.receipt = None;
    }
    Ok(Json(bundle))
}

async fn checkpoint(State(node): State<Arc<LedgerNode>>) -> Result<Response, HttpError> {
    let fin = node
        .cosigned
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let f = fin.ok_or_else(|| HttpError::not_found("no cosigned checkpoint yet"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        f.note,
    )
        .into_response())
}

impl std::fmt::Debug for LedgerNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerNode").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verinfer_log::witness::add_cosignature;
    use verinfer_types::SecretKey;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_seed(&[seed; 32])
    }

    fn checkpoint() -> Note {
        Checkpoint {
            origin: "test.verinfer/log".into(),
            size: 3,
            root: Hash::of(b"root"),
            extensions: Vec::new(),
        }
        .sign(&key(1))
        .unwrap_or_else(|e| panic!("{e}"))
        .note
    }

    /// The signature lines `witness` would send for `note`.
    fn reply(note: &Note, witness: &SecretKey) -> String {
        let mut n = Note::new(&note.text).unwrap_or_else(|e| panic!("{e}"));
        add_cosignature(&mut n, &witness_name(&witness.public()), witness, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        n.to_string()[n.text.len() + 1..].to_string()
    }

    #[test]
    fn an_honest_reply_gives_its_cosignature() {
        let note = checkpoint();
        let w = key(2);
        let r = own_cosignature(&note, &w.public(), &reply(&note, &w))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.dropped, 0);
        let mut n = note.clone();
        n.signatures.extend(r.cosignature);
        let vk = VerifierKey::new(&witness_name(&w.public()), ALG_COSIGNATURE_V1, w.public())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(verify_cosignature(&n, &vk).is_ok());
    }

    #[test]
    fn malformed_and_foreign_replies_give_nothing() {
        let note = checkpoint();
        let (w, other) = (key(2), key(3));
        for bad in ["", "garbage\n", "\u{2014} x\n"] {
            assert!(own_cosignature(&note, &w.public(), bad).is_err(), "{bad:?}");
        }
        // Another witness's valid line is not this witness's cosignature.
        let r = own_cosignature(&note, &w.public(), &reply(&note, &other))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.cosignature.is_none());
        assert_eq!(r.dropped, 1);
    }

    #[test]
    fn a_line_forged_under_another_name_does_not_void_it() {
        // Witness `bad` sends its own valid line and one forged under `w`'s
        // name; `w`'s own reply must still count, and the forged line is
        // never taken.
        let note = checkpoint();
        let (w, bad) = (key(2), key(3));
        let name = witness_name(&w.public());
        let id = VerifierKey::new(&name, ALG_COSIGNATURE_V1, w.public())
            .unwrap_or_else(|e| panic!("{e}"))
            .id();
        let mut raw = id.to_be_bytes().to_vec();
        raw.extend_from_slice(&[7u8; 72]);
        let forged = format!("\u{2014} {name} {}\n", B64.encode(raw));
        let bad_reply = format!("{}{forged}", reply(&note, &bad));
        let ok = |k: &SecretKey, text: &str| {
            own_cosignature(&note, &k.public(), text).unwrap_or_else(|e| panic!("{e}"))
        };
        let from_bad = ok(&bad, &bad_reply);
        assert_eq!(
            from_bad.dropped, 1,
            "the forged line is dropped and counted"
        );
        assert!(ok(&w, &forged).cosignature.is_none());
        let mut n = note.clone();
        n.signatures.extend(from_bad.cosignature);
        n.signatures.extend(ok(&w, &reply(&note, &w)).cosignature);
        let vk = |k: &SecretKey| {
            VerifierKey::new(&witness_name(&k.public()), ALG_COSIGNATURE_V1, k.public())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        assert!(verify_cosignature(&n, &vk(&w)).is_ok());
        assert!(verify_cosignature(&n, &vk(&bad)).is_ok());
    }
}
