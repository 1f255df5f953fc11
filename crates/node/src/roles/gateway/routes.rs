//! The gateway's routes: which handler answers which path.

use super::completions::{chat_completions, completions};
use super::metrics::metrics_text;
use super::openai::ApiError;
use super::pages;
use super::proxy::proxy;
use super::state::Gateway;
use super::views::{answer_status, devnet_info, info, models, network, receipt, summary};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

impl Gateway {
    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/v1/receipts/{id}", get(receipt))
            .route("/v1/answers/{request}", get(answer_status))
            .route("/v1/network", get(network))
            .route("/v1/ledger/summary", get(summary))
            .route("/metrics", get(metrics_text))
            .route("/log/{*path}", get(proxy))
            .route("/v1/explorer/{*path}", get(proxy))
            .route("/node/info", get(info))
            .route("/v1/devnet", get(devnet_info))
            .route("/", get(pages::chat))
            .route("/explorer", get(pages::explorer))
            .route("/explorer/{*rest}", get(pages::explorer))
            .route("/assets/{name}", get(pages::asset))
            .fallback(|| async { ApiError::not_found("no such endpoint") })
            .with_state(self.clone())
    }
}
