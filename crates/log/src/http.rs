//! The log over HTTP: the checkpoint and tiles as C2SP tlog-tiles, plus JSON
//! proof endpoints. [`router`] serves paths relative to the log prefix; the
//! node mounts it under `/log`.

use crate::store::{Log, LogError};
use crate::tiles::Tile;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use verinfer_types::Hash;

/// Routes: `/checkpoint`, `/tile/...`, `/proof/inclusion`, `/proof/consistency`.
pub fn router(log: Arc<Log>) -> Router {
    Router::new()
        .route("/checkpoint", get(checkpoint))
        .with_state(log.clone())
        .merge(proof_router(log))
}

/// The routes of [`router`] but `/checkpoint`, for a server that serves its
/// own (for example cosigned) checkpoint.
pub fn proof_router(log: Arc<Log>) -> Router {
    Router::new()
        .route("/tile/{*path}", get(tile))
        .route("/proof/inclusion", get(inclusion))
        .route("/proof/consistency", get(consistency))
        .with_state(log)
}

/// Signs a new checkpoint every `interval` while the log grows, so that
/// `/checkpoint` follows appends. Runs until the task is dropped.
pub async fn checkpoint_loop(log: Arc<Log>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        let l = log.clone();
        match tokio::task::spawn_blocking(move || l.checkpoint()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "signing checkpoint failed"),
            Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
        }
    }
}

struct ApiError(StatusCode, String);

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        let status = match e {
            LogError::Proof(_) | LogError::NoEntry { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn checkpoint(State(log): State<Arc<Log>>) -> Result<Response, ApiError> {
    let cp = match log.latest_checkpoint() {
        Some(c) => c,
        None => tokio::task::spawn_blocking(move || log.checkpoint())
            .await
            .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??,
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        cp.note.to_string(),
    )
        .into_response())
}

async fn tile(State(log): State<Arc<Log>>, Path(path): Path<String>) -> Result<Response, ApiError> {
    let tile = Tile::parse(&format!("tile/{path}"))
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let bytes = tokio::task::spawn_blocking(move || log.tile(&tile))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "tile does not exist yet".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        bytes,
    )
        .into_response())
}

fn b64(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| B64.encode(h.0)).collect()
}

/// Query of `/proof/inclusion`.
#[derive(Deserialize, Debug)]
pub struct InclusionQuery {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
}

/// Body of `/proof/inclusion`: hashes in base64.
#[derive(Serialize, Deserialize, Debug)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub size: u64,
    /// RFC 6962 leaf hash of the entry.
    pub leaf_hash: String,
    /// Root at `size`.
    pub root: String,
    /// Proof hashes, leaf upwards.
    pub proof: Vec<String>,
}

async fn inclusion(
    State(log): State<Arc<Log>>,
    Query(q): Query<InclusionQuery>,
) -> Result<Json<InclusionProof>, ApiError> {
    let proof = log.inclusion_proof(q.index, q.size)?;
    Ok(Json(InclusionProof {
        index: q.index,
        size: q.size,
        leaf_hash: B64.encode(log.leaf_hash(q.index)?.0),
        root: B64.encode(log.root(q.size)?.0),
        proof: b64(&proof),
    }))
}

/// Query of `/proof/consistency`.
#[derive(Deserialize, Debug)]
pub struct ConsistencyQuery {
    /// Older size.
    pub old: u64,
    /// Newer size.
    pub new: u64,
}

/// Body of `/proof/consistency`: hashes in base64.
#[derive(Serialize, Deserialize, Debug)]
pub struct ConsistencyProof {
    /// Older size.
    pub old: u64,
    /// Newer size.
    pub new: u64,
    /// Root at `old`.
    pub old_root: String,
    /// Root at `new`.
    pub new_root: String,
    /// Proof hashes.
    pub proof: Vec<String>,
}

async fn consistency(
    State(log): State<Arc<Log>>,
    Query(q): Query<ConsistencyQuery>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let proof = log.consistency_proof(q.old, q.new)?;
    Ok(Json(ConsistencyProof {
        old: q.old,
        new: q.new,
        old_root: B64.encode(log.root(q.old)?.0),
        new_root: B64.encode(log.root(q.new)?.0),
        proof: b64(&proof),
    }))
}
