//! The verifier role's routes: which handler answers which path.

use super::evm::{sign_claim, sign_settlement, sign_slash};
use super::{add_checkpoint, check, info, warm, VerifierNode};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

impl VerifierNode {
    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/verifier/check", post(check))
            .route("/verifier/warm", post(warm))
            .route("/witness/add-checkpoint", post(add_checkpoint))
            // Settlement requests carry whole receipts: as large as the
            // ledger's largest transaction, not axum's default 2 MB.
            .route(
                "/verifier/evm/settlement",
                post(sign_settlement).layer(DefaultBodyLimit::max(crate::wire::MAX_TX_BYTES)),
            )
            .route("/verifier/evm/slash", post(sign_slash))
            .route("/verifier/evm/claim", post(sign_claim))
            .route("/node/info", get(info))
            .with_state(self.clone())
    }
}
