//! `/log/...` and `/v1/explorer/...`: the ledger's public reads, passed
//! through for the allowed paths only.

use super::guard;
use super::openai::ApiError;
use super::state::Gateway;
use crate::http::HttpError;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;
use std::time::Duration;

/// `/log/...` and `/v1/explorer/...`: the ledger's log and explorer API,
/// for the allowed paths only ([`guard::proxy_target`]), checked on the raw
/// request target before anything is forwarded.
pub(super) async fn proxy(State(gw): State<Arc<Gateway>>, uri: Uri) -> Response {
    match guard::proxy_target(uri.path(), uri.query()) {
        Ok(Some(target)) => pass_through(&gw, &target)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Ok(None) => ApiError::not_found("no such endpoint").into_response(),
        Err(e) => e.into_response(),
    }
}

/// GETs `path` from the ledger role and answers with its status, type and body.
async fn pass_through(gw: &Gateway, path: &str) -> Result<Response, HttpError> {
    let resp = gw
        .peer
        .http()
        .get(format!("{}{path}", gw.ledger.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| HttpError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(v) = resp
            .headers()
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            headers.insert(name, v);
        }
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| HttpError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok((status, headers, bytes).into_response())
}
