//! The ledger role: the embedded ledger and its receipts log over HTTP.
//!
//! - `POST /ledger/tx`: a signed transaction; answered once durable (409 with
//!   the reason when refused; nothing changes then);
//! - `GET /ledger/account/{key}`, `/ledger/nodes`, `/ledger/params`,
//!   `/v1/ledger/summary`: state reads;
//! - `GET /ledger/receipts/{id}`: a receipt with its inclusion proof and the
//!   latest final checkpoint ([`ReceiptBundle`]);
//! - `/log/...`: the receipts log as C2SP tlog-tiles; `/log/checkpoint` is the
//!   latest *cosigned* checkpoint.
//!
//! Verifiers are the log's witnesses: while the log grows, the role signs a
//! checkpoint and asks every registered verifier to cosign it with the C2SP
//! tlog-witness `add-checkpoint` call (old size, consistency proof,
//! checkpoint). A checkpoint with `witness_quorum` cosignatures is final: it
//! is stored durably and served.

use crate::auth::now_ms;
use crate::chronicle::Chronicle;
use crate::client::Peer;
use crate::http::{blocking, HttpError};
use crate::wire::{
    AccountView, EscrowView, NodeInfo, NodeView, ParamsView, SummaryView, TxApplied, TxRefused,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use verinfer_ledger::state::TxError;
use verinfer_ledger::tx::{Role, Transaction, TxBody};
use verinfer_ledger::{Ledger, LedgerError};
use verinfer_log::checkpoint::Checkpoint;
use verinfer_log::witness::verify_cosignature;
use verinfer_types::note::{Note, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::{Hash, PublicKey};
use verinfer_verify::receipt::{witness_name, ReceiptBundle};

/// File (in the ledger directory) holding the latest final checkpoint.
const COSIGNED_FILE: &str = "cosigned-checkpoint";
/// Largest transaction body. axum's default of 2 MB refused a gateway's
/// settlement of 256 long answers whole; the gateway's settler keeps its
/// batches below this by encoded size (a Request's input is bounded by the
/// gateway's body limit, not by this), so only a receipt larger than this
/// alone is refused, alone.
pub const MAX_TX_BYTES: usize = 32 << 20;

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
    pub(crate) last_seen: Mutex<HashMap<PublicKey, u64>>,
    cosigned: RwLock<Option<Final>>,
    /// Each witness's last cosigned size, as far as we know.
    witness_sizes: Mutex<HashMap<PublicKey, u64>>,
    peer: Peer,
    /// Activity over time, for the explorer.
    pub(crate) chronicle: Chronicle,
    /// Every final checkpoint, for the explorer (`{"time_ms", "note"}` entries).
    pub(crate) checkpoints: verinfer_log::Log,
    /// Commitments to Results before they are checked: the checkpoint that
    /// first includes one, signed by this log's key, is the randomness that
    /// draws the Result's verifiers.
    commitments: verinfer_log::Log,
    /// Keys (gateways) whose reports of rejections and missed tasks count.
    reporters: Vec<PublicKey>,
    gate: crate::auth::Gate,
    /// Settles on a chain when the EVM backend is configured.
    settler: std::sync::OnceLock<Arc<verinfer_ledger::evm::settler::Settler>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LedgerNode {
    /// The role around an open ledger in `dir`, with node key `key` (used to
    /// authenticate its calls to witnesses).
    pub fn new(
        ledger: Arc<Ledger>,
        dir: PathBuf,
        key: verinfer_types::SecretKey,
        witness_quorum: u32,
        reporters: Vec<PublicKey>,
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
        let gate = crate::auth::Gate::open(key.public(), &dir)?;
        Ok(Arc::new(LedgerNode {
            ledger,
            key: key.public(),
            witness_quorum,
            last_seen: Mutex::new(HashMap::new()),
            cosigned: RwLock::new(cosigned),
            witness_sizes: Mutex::new(HashMap::new()),
            peer: Peer::new(key),
            chronicle: Chronicle::open(&dir)?,
            checkpoints,
            commitments,
            reporters,
            gate,
            settler: std::sync::OnceLock::new(),
            dir,
        }))
    }

    /// Writes the explorer's bookkeeping, the open minute included (at
    /// shutdown).
    pub fn flush(&self) -> anyhow::Result<()> {
        self.chronicle.flush(now_ms(), true)
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

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route(
                "/ledger/tx",
                post(submit).layer(DefaultBodyLimit::max(MAX_TX_BYTES)),
            )
            .route("/ledger/escrow/{request}", get(escrow))
            .route("/ledger/account/{key}", get(account))
            .route("/ledger/nodes", get(nodes))
            .route("/ledger/params", get(params))
            .route("/ledger/receipts/{id}", get(receipt))
            .route("/v1/ledger/summary", get(summary))
            .route("/node/info", get(info))
            .route("/log/checkpoint", get(checkpoint))
            .route("/ledger/report", post(report))
            .route("/ledger/commit", post(commit))
            .route("/ledger/explorer/records", get(crate::explorer::records))
            .route(
                "/ledger/explorer/checkpoints",
                get(crate::explorer::checkpoints),
            )
            .route(
                "/ledger/explorer/settlement",
                get(crate::explorer::settlement),
            )
            .route("/ledger/explorer/network", get(crate::explorer::network))
            .route("/ledger/evm", get(crate::evm_role::status))
            .route("/ledger/evm/link", post(crate::evm_role::add_link))
            .with_state(self.clone())
            .nest(
                "/log",
                verinfer_log::http::proof_router(self.ledger.receipts().clone()),
            )
    }

    /// The registered nodes with their liveness.
    pub fn node_views(&self) -> Vec<NodeView> {
        let seen = lock(&self.last_seen).clone();
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

    /// Signs a checkpoint when the log grew and gathers cosignatures until
    /// one is final; runs until the task is dropped.
    pub async fn cosign_loop(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flushed = now_ms();
        loop {
            tick.tick().await;
            if now_ms().saturating_sub(flushed) >= 5_000 {
                flushed = now_ms();
                let n = self.clone();
                match tokio::task::spawn_blocking(move || n.chronicle.flush(flushed, false)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the chronicle"),
                    Err(e) => tracing::warn!(error = %e, "chronicle task failed"),
                }
            }
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
            let Ok(vk) = VerifierKey::new(&witness_name(&key), ALG_COSIGNATURE_V1, key) else {
                continue;
            };
            let candidate = Note::parse(&format!("{note}{lines}"))?;
            if verify_cosignature(&candidate, &vk).is_ok() {
                note = candidate;
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
    let live = matches!(tx.body, TxBody::Heartbeat | TxBody::Register { .. });
    let signer = tx.signer;
    let answers: Vec<(PublicKey, Vec<PublicKey>)> = match &tx.body {
        TxBody::Settle { receipts } => receipts
            .iter()
            .map(|r| {
                (
                    r.result.node,
                    r.certificate.verdicts.iter().map(|v| v.verifier).collect(),
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    let r = match blocking(move || n.ledger.submit(&tx)).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match r {
        Ok(applied) => {
            let now = now_ms();
            if live {
                lock(&node.last_seen).insert(signer, now);
                let role = node
                    .ledger
                    .with_state(|s| s.nodes.get(&signer).map(|n| n.role));
                if let Some(role) = role {
                    node.chronicle.seen(signer, role, now);
                }
            }
            if !answers.is_empty() {
                node.chronicle
                    .settled(applied.effects.first_leaf, &answers, now);
            }
            if applied.effects.slashed.is_some() {
                node.chronicle.slash(applied.height, now);
            }
            Json(TxApplied {
                height: applied.height,
                first_leaf: applied.effects.first_leaf,
                leaves: applied.effects.leaves.len() as u64,
                proposal: applied.effects.proposal,
            })
            .into_response()
        }
        Err(LedgerError::Rejected(e)) => (StatusCode::CONFLICT, Json(refused(&e))).into_response(),
        Err(e) => HttpError::internal(e).into_response(),
    }
}

/// `POST /ledger/report`: a gateway's count of rejected results and the
/// verifiers that missed a task (authenticated; only registered gateways,
/// and of those only the configured reporters when some are configured).
async fn report(
    State(node): State<Arc<LedgerNode>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<StatusCode, HttpError> {
    let me = &*node;
    crate::http::authorize(&node.gate, &method, &uri, &headers, &body, |k| async move {
        me.require_gateway(&k)?;
        if !me.reporters.is_empty() && !me.reporters.contains(&k) {
            return Err(HttpError::forbidden("not a reporter of this ledger"));
        }
        Ok(())
    })
    .await?;
    let r: crate::wire::Report = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("report: {e}")))?;
    node.chronicle.report(r.rejected, &r.missed, now_ms());
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /ledger/commit` (authenticated, from a registered gateway: the log
/// grows only for requests someone staked for; body: a Result hash as JSON
/// `{"result": HEX}`): appends the commitment durably and answers with the
/// signed checkpoint that first includes it (`{"index", "checkpoint"}`).
/// Nobody but this log's key can compute that note before it is signed, so
/// a node that committed to its Result cannot grind the verifiers it gets.
async fn commit(
    State(node): State<Arc<LedgerNode>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, HttpError> {
    let me = &*node;
    crate::http::authorize(&node.gate, &method, &uri, &headers, &body, |k| async move {
        me.require_gateway(&k)
    })
    .await?;
    let c: crate::wire::Commit = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("commit: {e}")))?;
    let n = node.clone();
    let (index, note) = blocking(move || -> Result<(u64, String), verinfer_log::LogError> {
        let index = n.commitments.append(c.result.0.to_vec())?;
        // A checkpoint of at least index + 1 entries (concurrent commits share one).
        let cp = n.commitments.checkpoint()?;
        Ok((index, cp.note.to_string()))
    })
    .await?
    .map_err(HttpError::internal)?;
    Ok(Json(
        serde_json::json!({ "index": index, "checkpoint": note }),
    ))
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
    })
}

async fn receipt(
    State(node): State<Arc<LedgerNode>>,
    Path(id): Path<String>,
) -> Result<Json<ReceiptBundle>, HttpError> {
    let id: Hash = id
        .parse()
        .map_err(|_| HttpError::bad_request("receipt id must be 64 hex digits"))?;
    let n = node.clone();
    blocking(move || n.bundle(&id))
        .await?
        .map_err(HttpError::internal)?
        .map(Json)
        .ok_or_else(|| HttpError::not_found(format!("no receipt {id}")))
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
