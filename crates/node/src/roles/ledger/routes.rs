//! The ledger role's routes: which handler answers which path.

use super::{
    account, anchor, checkpoint, commit, escrow, evm, explorer, info, metrics, nodes, params,
    provisional, receipt, report, submit, summary, LedgerNode, MAX_TX_BYTES,
};
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

impl LedgerNode {
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
            .route("/metrics", get(metrics))
            .route("/ledger/commit", post(commit))
            .route("/ledger/anchor/{result}", get(anchor))
            .route("/ledger/provisional", get(provisional))
            .route("/ledger/explorer/records", get(explorer::records))
            .route("/ledger/explorer/checkpoints", get(explorer::checkpoints))
            .route("/ledger/explorer/settlement", get(explorer::settlement))
            .route("/ledger/explorer/network", get(explorer::network))
            .route("/ledger/evm", get(evm::status))
            .route("/ledger/evm/link", post(evm::add_link))
            .with_state(self.clone())
            .nest(
                "/log",
                verinfer_log::http::proof_router(self.ledger.receipts().clone()),
            )
    }
}
