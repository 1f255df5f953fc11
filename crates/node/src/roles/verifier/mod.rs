//! The verifier role: checks Results and signs Verdicts, and witnesses the
//! receipts log.
//!
//! - `POST /verifier/check` (authenticated, from a registered gateway, or a
//!   registered verifier escalating an answer it watches; body
//!   `{"request", "result"}`): the signed
//!   [`Verdict`](verinfer_types::records::Verdict) of one check (the rules
//!   and one teacher-forced scoring pass). Each model the verifier checks
//!   has a pool of checkers, each with an engine of its own, checking as
//!   many results at once; a bounded number more wait (429 with
//!   `Retry-After` beyond), and a check whose caller left before a checker
//!   was free is never started. A check of a model the verifier does not
//!   run is refused with 404 naming `model`;
//! - `POST /verifier/warm` (authenticated, from a registered gateway; body:
//!   the signed Request it is dispatching): the request's prompt computed
//!   into the prefix cache (scoped to its requester) while the inference
//!   node answers, so that a check of its Result scores the answer only.
//!   Best effort and bounded: one warm-up at a time, only on a checker idle
//!   at that moment, stopped between chunks as soon as a check waits for a
//!   checker; 202 when started, 204 when skipped;
//! - `POST /witness/add-checkpoint` (authenticated, from the ledger's key
//!   only): the C2SP tlog-witness call. The body is
//!   `old SIZE`, the consistency proof (base64 lines), a blank line and the
//!   checkpoint note; the answer is this witness's cosignature line, 409 with
//!   its own size when `old` is not the size it last cosigned, 422 when the
//!   proof or the log's signature fails. The last cosigned checkpoint is
//!   stored before the cosignature is returned, so a restarted witness never
//!   cosigns a fork or a rollback of what it already vouched for.
//!
//! It watches optimistic answers during their window ([`watch`]). Its EVM
//! duties (signing settlements and slashes) are in [`evm`].

pub mod evm;
mod routes;
pub mod watch;

use crate::auth::{now_ms, Gate};
use crate::http::{authorize, blocking, Admits, HttpError, Queue, Signed};
use crate::membership::Registry;
use crate::wire::{CheckRequest, NodeInfo, ServedModel};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use verinfer_inference::Engine;
use verinfer_log::witness::Witness;
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::VerifierKey;
use verinfer_types::records::{Request, Verdict};
use verinfer_types::sync::lock;
use verinfer_types::{Hash, PublicKey, SecretKey, SignedRecord};
use verinfer_verify::receipt::witness_name;
use verinfer_verify::{CheckError, Checker};

/// File (in the verifier's directory) holding the last cosigned checkpoint.
const WITNESS_FILE: &str = "witness-checkpoint";
/// Checkers (engines) of a verifier, by default.
pub const DEFAULT_WORKERS: usize = 2;
/// Checks waiting for a free checker at most, by default.
pub const DEFAULT_QUEUE: usize = 16;

/// Checkers that work at the same time, each on its own engine.
struct Checkers {
    idle: Mutex<Vec<Checker<Engine>>>,
    /// One permit per idle checker.
    free: Arc<tokio::sync::Semaphore>,
    /// Checks waiting or running.
    queue: Queue,
    /// Checks waiting for a permit: a warm-up stops for them.
    waiting: AtomicUsize,
    /// Whether a warm-up runs (one at a time).
    warming: AtomicBool,
}

/// Counts a check as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Checkers {
    fn new(checkers: Vec<Checker<Engine>>, queue: usize) -> Self {
        Checkers {
            free: Arc::new(tokio::sync::Semaphore::new(checkers.len())),
            queue: Queue::new(checkers.len() + queue, "this verifier's check queue"),
            idle: Mutex::new(checkers),
            waiting: AtomicUsize::new(0),
            warming: AtomicBool::new(false),
        }
    }

    /// Computes `request`'s prompt into the shared prefix cache on a checker
    /// idle right now; false (nothing done) when a warm-up runs already or
    /// no checker is idle. The warm-up stops between chunks once a check
    /// waits, so it never holds a check up by more than one chunk.
    fn warm(self: &Arc<Self>, request: Request) -> bool {
        if self.warming.swap(true, Ordering::SeqCst) {
            return false;
        }
        let Ok(permit) = self.free.clone().try_acquire_owned() else {
            self.warming.store(false, Ordering::SeqCst);
            return false;
        };
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let checker = lock(&pool.idle).pop();
            if let Some(mut checker) = checker {
                let engine = checker.engine_mut();
                // The prompt as the check builds it, in the check's scope.
                if let Ok(prompt) =
                    verinfer_inference::respond::prompt_tokens(engine, &request.input)
                {
                    let scope = Some(request.requester.to_bytes());
                    let waiting = &pool.waiting;
                    let t = std::time::Instant::now();
                    let warmed =
                        engine.warm(&prompt, scope, &mut || waiting.load(Ordering::SeqCst) > 0);
                    tracing::debug!(target: "latency", positions = ?warmed.ok(),
                        warm = t.elapsed().as_secs_f64() * 1e3, "verifier");
                }
                lock(&pool.idle).push(checker);
            }
            drop(permit);
            pool.warming.store(false, Ordering::SeqCst);
        });
        true
    }

    /// Checks `req` on the next free checker (429 when too many wait).
    async fn verdict(self: &Arc<Self>, req: CheckRequest) -> Result<Verdict, HttpError> {
        let _place = self.queue.enter()?;
        let start = std::time::Instant::now();
        let waiting = Waiting::new(&self.waiting);
        // A caller that leaves while waiting drops this future: never started.
        let permit = self
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(HttpError::internal)?;
        drop(waiting);
        let pool = self.clone();
        let waited = start.elapsed();
        // The checker goes back to the pool from the blocking task itself,
        // even when the caller left meanwhile.
        let verdict = blocking(move || {
            let mut checker = lock(&pool.idle).pop()?;
            let t = std::time::Instant::now();
            let v = checker.verdict(&req.request, &req.result);
            tracing::debug!(target: "latency", request = %req.result.request,
                wait = waited.as_secs_f64() * 1e3, score = t.elapsed().as_secs_f64() * 1e3, "verifier");
            lock(&pool.idle).push(checker);
            drop(permit);
            Some(v)
        })
        .await?
        .ok_or_else(|| HttpError::internal("no idle checker"))?;
        match verdict {
            Ok(v) => Ok(v),
            Err(e @ CheckError::ModelNotServed { .. }) => Err(HttpError::not_found(e.to_string())),
            Err(e) => Err(HttpError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
        }
    }
}

/// The verifier role's state.
pub struct VerifierNode {
    /// Each model's checkers and figures, by model id.
    checkers: BTreeMap<Hash, (Arc<Checkers>, ServedModel)>,
    witness: Mutex<Witness>,
    dir: PathBuf,
    key: SecretKey,
    gate: Gate,
    registry: Arc<Registry>,
    log_key: VerifierKey,
    /// The EVM key of this node's key (signs settlements and slashes).
    evm: verinfer_ledger::evm::keys::PrivateKeySigner,
    /// The ledger this verifier is registered with: the registry a slash's
    /// committee is checked against is read from it, never from the request.
    ledger: std::sync::OnceLock<crate::client::LedgerClient>,
}

impl VerifierNode {
    /// A verifier checking each model of `engines` (model id and its
    /// engines: one checker each, with at most `queue` more checks waiting
    /// per model), signing with `key`, witnessing the log whose key is
    /// `log_key`, keeping its witness state and nonces in `dir`, serving the
    /// gateways and the ledger of `registry`.
    pub fn new(
        engines: Vec<(Vec<Engine>, Hash)>,
        key: SecretKey,
        log_key: VerifierKey,
        dir: PathBuf,
        registry: Arc<Registry>,
        queue: usize,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let checkers = engines
            .into_iter()
            .map(|(engines, model_id)| {
                let served = ServedModel {
                    id: model_id,
                    context_len: engines
                        .first()
                        .map(|e| u32::try_from(e.model().max_seq_len()).unwrap_or(u32::MAX))
                        .ok_or_else(|| anyhow::anyhow!("a verifier needs an engine per model"))?,
                    vocab_size: 0,
                };
                let checkers = engines
                    .into_iter()
                    .map(|e| Checker::new(e, model_id, key.clone()))
                    .collect();
                Ok((model_id, (Arc::new(Checkers::new(checkers, queue)), served)))
            })
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        if checkers.is_empty() {
            anyhow::bail!("a verifier needs at least one model");
        }
        let last = match std::fs::read_to_string(dir.join(WITNESS_FILE)) {
            Ok(text) => Some(SignedCheckpoint::open(&text, &log_key)?.checkpoint),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let witness = Witness::new(
            &witness_name(&key.public()),
            key.clone(),
            log_key.clone(),
            last,
        )?;
        let evm = verinfer_ledger::evm::evm_signer(&key)?;
        Ok(Arc::new(VerifierNode {
            checkers,
            witness: Mutex::new(witness),
            gate: Gate::open(key.public(), &dir)?,
            dir,
            key,
            registry,
            log_key,
            evm,
            ledger: std::sync::OnceLock::new(),
        }))
    }

    /// Sets the ledger this verifier is registered with (once).
    pub fn set_ledger(&self, ledger: crate::client::LedgerClient) {
        let _ = self.ledger.set(ledger);
    }

    pub(crate) fn ledger(&self) -> Option<&crate::client::LedgerClient> {
        self.ledger.get()
    }

    /// Checks that a message is authentic and from the ledger's key (the
    /// ledger's duties: witnessing, signing settlements and slashes).
    pub(crate) async fn ledger_only(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), HttpError> {
        let r = &self.registry;
        authorize(&self.gate, method, uri, headers, body, |k| async move {
            r.require_ledger(k).await
        })
        .await
        .map(drop)
    }

    pub(crate) fn log_key(&self) -> &VerifierKey {
        &self.log_key
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.key
    }

    pub(crate) fn evm(&self) -> &verinfer_ledger::evm::keys::PrivateKeySigner {
        &self.evm
    }

    /// Handles one `add-checkpoint` body (blocking: it fsyncs).
    fn witness(&self, body: &str) -> Result<String, HttpError> {
        let bad = |m: &str| HttpError(StatusCode::BAD_REQUEST, m.to_string());
        let (head, note_text) = body
            .split_once("\n\n")
            .ok_or_else(|| bad("body must be: old N, proof lines, a blank line, the checkpoint"))?;
        let mut lines = head.lines();
        let old: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad("first line must be `old N`"))?;
        let proof = lines
            .map(|l| {
                B64.decode(l)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                    .map(Hash)
                    .ok_or_else(|| bad("proof lines must be base64 SHA-256 hashes"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut w = lock(&self.witness);
        let mine = w.last().map_or(0, |c| c.size);
        if old != mine {
            return Err(HttpError(StatusCode::CONFLICT, format!("{mine}\n")));
        }
        let note = w
            .cosign(note_text, &proof, now_ms() / 1000)
            .map_err(|e| HttpError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
        // Durable before it is vouched for: a restart resumes from here.
        if let Err(e) = verinfer_log::write_atomic(&self.dir, WITNESS_FILE, note_text.as_bytes()) {
            return Err(HttpError::internal(e));
        }
        let name = witness_name(&self.key.public());
        let prefix = format!("\u{2014} {name} ");
        Ok(note
            .to_string()
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| format!("{l}\n"))
            .collect())
    }
}

/// Checks are the gateways' to ask for, and the verifiers' watching an
/// optimistic answer (the same bounded queue serves both).
impl Admits<CheckRequest> for VerifierNode {
    const WHAT: &'static str = "check";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_gateway_or_verifier(sender)
    }
}

/// Warm-ups are the gateways' to ask for, as checks are.
impl Admits<Request> for VerifierNode {
    const WHAT: &'static str = "warm";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_gateway(sender)
    }
}

async fn warm(
    State(node): State<Arc<VerifierNode>>,
    Signed { body: request, .. }: Signed<Request>,
) -> Result<StatusCode, HttpError> {
    let checkers = node
        .checkers
        .get(&request.model)
        .map(|(c, _)| c.clone())
        .ok_or_else(|| HttpError::model_not_served(&request.model, node.checkers.keys()))?;
    // Only a Request its requester signed: a warm-up works in its scope.
    request
        .verify_signature()
        .map_err(|e| HttpError::bad_request(format!("warm: the request's signature: {e}")))?;
    Ok(if checkers.warm(request) {
        StatusCode::ACCEPTED
    } else {
        StatusCode::NO_CONTENT
    })
}

async fn check(
    State(node): State<Arc<VerifierNode>>,
    Signed { body: req, .. }: Signed<CheckRequest>,
) -> Result<Response, HttpError> {
    let checkers = node
        .checkers
        .get(&req.request.model)
        .map(|(c, _)| c.clone())
        .ok_or_else(|| HttpError::model_not_served(&req.request.model, node.checkers.keys()))?;
    Ok(Json(checkers.verdict(req).await?).into_response())
}

async fn add_checkpoint(
    State(node): State<Arc<VerifierNode>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    node.ledger_only(&method, &uri, &headers, &body).await?;
    let body = String::from_utf8(body.to_vec())
        .map_err(|_| HttpError::bad_request("add-checkpoint: the body is not UTF-8"))?;
    let n = node.clone();
    match blocking(move || n.witness(&body)).await? {
        Ok(lines) => Ok(([("content-type", "text/plain; charset=utf-8")], lines).into_response()),
        Err(HttpError(StatusCode::CONFLICT, size)) => Ok((
            StatusCode::CONFLICT,
            [("content-type", "text/x.tlog.size")],
            size,
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

async fn info(State(node): State<Arc<VerifierNode>>) -> Json<NodeInfo> {
    Json(NodeInfo::serving(
        node.key.public(),
        "verifier",
        node.checkers.values().map(|(_, s)| s.clone()).collect(),
    ))
}

impl std::fmt::Debug for VerifierNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifierNode").finish_non_exhaustive()
    }
}
