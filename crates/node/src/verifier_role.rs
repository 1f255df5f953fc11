//! The verifier role: checks Results and signs Verdicts, and witnesses the
//! receipts log.
//!
//! - `POST /verifier/check` (authenticated; body `{"request", "result"}`):
//!   the signed [`Verdict`](verinfer_types::records::Verdict) of one check
//!   (the rules and one teacher-forced scoring pass);
//! - `POST /witness/add-checkpoint`: the C2SP tlog-witness call. The body is
//!   `old SIZE`, the consistency proof (base64 lines), a blank line and the
//!   checkpoint note; the answer is this witness's cosignature line, 409 with
//!   its own size when `old` is not the size it last cosigned, 422 when the
//!   proof or the log's signature fails. The last cosigned checkpoint is
//!   stored before the cosignature is returned, so a restarted witness never
//!   cosigns a fork or a rollback of what it already vouched for.

use crate::auth::{now_ms, Gate};
use crate::http::{authenticate, blocking, HttpError};
use crate::wire::{CheckRequest, NodeInfo};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use verinfer_inference::{Engine, ENGINE_VERSION};
use verinfer_log::witness::Witness;
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::VerifierKey;
use verinfer_types::{Hash, SecretKey};
use verinfer_verify::receipt::witness_name;
use verinfer_verify::{CheckError, Checker};

/// File (in the verifier's directory) holding the last cosigned checkpoint.
const WITNESS_FILE: &str = "witness-checkpoint";

/// The verifier role's state.
pub struct VerifierNode {
    checker: Mutex<Checker<Engine>>,
    witness: Mutex<Witness>,
    dir: PathBuf,
    key: SecretKey,
    model_id: Hash,
    context_len: u32,
    gate: Gate,
    log_key: VerifierKey,
    /// The EVM key of this node's key (signs settlements and slashes).
    evm: verinfer_ledger::evm::keys::PrivateKeySigner,
    /// The ledger this verifier is registered with: the registry a slash's
    /// committee is checked against is read from it, never from the request.
    ledger: std::sync::OnceLock<crate::client::LedgerClient>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VerifierNode {
    /// A verifier checking model `model_id` on `engine`, signing with `key`,
    /// witnessing the log whose key is `log_key`, keeping its witness state
    /// in `dir`.
    pub fn new(
        engine: Engine,
        model_id: Hash,
        key: SecretKey,
        log_key: VerifierKey,
        dir: PathBuf,
    ) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
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
        let context_len = u32::try_from(engine.model().max_seq_len()).unwrap_or(u32::MAX);
        Ok(Arc::new(VerifierNode {
            checker: Mutex::new(Checker::new(engine, model_id, key.clone())),
            witness: Mutex::new(witness),
            dir,
            key,
            model_id,
            context_len,
            gate: Gate::new(),
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

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/verifier/check", post(check))
            .route("/witness/add-checkpoint", post(add_checkpoint))
            .route(
                "/verifier/evm/settlement",
                post(crate::evm_role::sign_settlement),
            )
            .route("/verifier/evm/slash", post(crate::evm_role::sign_slash))
            .route("/node/info", get(info))
            .with_state(self.clone())
    }

    /// Handles one `add-checkpoint` body (blocking: it fsyncs).
    pub(crate) fn gate(&self) -> &Gate {
        &self.gate
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

async fn check(
    State(node): State<Arc<VerifierNode>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    authenticate(&node.gate, &method, &uri, &headers, &body)?;
    let req: CheckRequest =
        serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(format!("check: {e}")))?;
    let n = node.clone();
    let verdict = blocking(move || lock(&n.checker).verdict(&req.request, &req.result)).await?;
    match verdict {
        Ok(v) => Ok(Json(v).into_response()),
        Err(e @ CheckError::ModelNotServed { .. }) => Err(HttpError::not_found(e.to_string())),
        Err(e) => Err(HttpError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())),
    }
}

async fn add_checkpoint(
    State(node): State<Arc<VerifierNode>>,
    body: String,
) -> Result<Response, HttpError> {
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
    Json(NodeInfo {
        key: node.key.public(),
        role: "verifier".into(),
        models: vec![node.model_id],
        engine: ENGINE_VERSION.into(),
        context_len: node.context_len,
        vocab_size: 0,
    })
}
