//! What every role's HTTP server shares: binding, JSON errors, the
//! authentication gate as a request check.

use crate::auth::Gate;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// A JSON error `{"error": message}` with a status.
#[derive(Debug)]
pub struct HttpError(pub StatusCode, pub String);

impl HttpError {
    /// 400 with `msg`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::BAD_REQUEST, msg.into())
    }
    /// 500 with `msg`.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        HttpError(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
    }
    /// 404 with `msg`.
    pub fn not_found(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::NOT_FOUND, msg.into())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// Checks that a request is an authentic, fresh signed message.
pub fn authenticate(
    gate: &Gate,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<verinfer_types::PublicKey, HttpError> {
    gate.check(method, uri, headers, body)
        .map_err(|e| HttpError(StatusCode::UNAUTHORIZED, e.to_string()))
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and its
/// base URL.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local: SocketAddr = listener.local_addr()?;
    Ok((listener, format!("http://{local}")))
}

/// Runs blocking work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(HttpError::internal)
}
