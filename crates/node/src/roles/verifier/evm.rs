//! The verifier role's EVM duties: the ledger's settler asks every
//! registered verifier to sign each settlement and slash, and the verifier
//! checks before it signs.
//!
//! - `POST /verifier/evm/settlement` (authenticated, from the ledger's key; body a
//!   [`SettlementRequest`]): the verifier opens the checkpoint note with the
//!   log's key, requires its own cosignature on it (it vouched for that
//!   history), checks every receipt's inclusion and the netting
//!   ([`check_settlement`]), and answers its EIP-712 signature;
//! - `POST /verifier/evm/slash` (authenticated, from the ledger's key; body a
//!   [`SlashRequest`]): the same for slash evidence ([`check_slash`], against
//!   the registry the verifier reads from its ledger).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use verinfer_ledger::evm::netting::{
    check_settlement, check_slash, domain, slash_digest, EvmSignature, SettlementRequest,
    SlashRequest,
};
use verinfer_ledger::evm::settler::sign_digest;
use verinfer_ledger::tx::Role;
use verinfer_log::witness::verify_cosignature;
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::{Note, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::PublicKey;
use verinfer_verify::receipt::witness_name;

use super::VerifierNode;
use crate::auth::Gate;
use crate::http::{Admits, HttpError, Signed};

/// Settlements are the ledger's to ask for.
impl Admits<SettlementRequest> for VerifierNode {
    const WHAT: &'static str = "settlement";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_ledger(sender)
    }
}

/// Slashes are the ledger's to ask for.
impl Admits<SlashRequest> for VerifierNode {
    const WHAT: &'static str = "slash";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_ledger(sender)
    }
}

/// `POST /verifier/evm/settlement`.
pub async fn sign_settlement(
    State(node): State<Arc<VerifierNode>>,
    Signed { body: req, .. }: Signed<SettlementRequest>,
) -> Result<Json<EvmSignature>, HttpError> {
    let n = node.clone();
    crate::http::blocking(move || {
        let cp = SignedCheckpoint::open(&req.checkpoint, n.log_key())
            .map_err(HttpError::unprocessable)?
            .checkpoint;
        let me = n.key().public();
        let vk = VerifierKey::new(&witness_name(&me), ALG_COSIGNATURE_V1, me)
            .map_err(HttpError::unprocessable)?;
        let note = Note::parse(&req.checkpoint).map_err(HttpError::unprocessable)?;
        verify_cosignature(&note, &vk).map_err(|e| {
            HttpError::unprocessable(format!("not a checkpoint this verifier cosigned: {e}"))
        })?;
        let batch = check_settlement(&req, cp.size, &cp.root).map_err(HttpError::unprocessable)?;
        let digest = batch.digest(&domain(req.chain_id, req.contract));
        sign_digest(n.evm(), &digest)
            .map(Json)
            .map_err(HttpError::internal)
    })
    .await?
}

/// `POST /verifier/evm/slash`.
pub async fn sign_slash(
    State(node): State<Arc<VerifierNode>>,
    Signed { body: req, .. }: Signed<SlashRequest>,
) -> Result<Json<EvmSignature>, HttpError> {
    if req.accused.account == node.key().public() {
        return Err(HttpError::unprocessable(
            "a verifier does not sign its own slash",
        ));
    }
    // Who is registered is the ledger's word, not the caller's.
    let ledger = node.ledger().ok_or_else(|| {
        HttpError::unprocessable("this verifier knows no ledger to read the registry from")
    })?;
    let unavailable = |e: crate::client::ClientError| {
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the registry from the ledger: {e}"),
        )
    };
    let (nodes, params) =
        futures_util::try_join!(ledger.nodes(), ledger.params()).map_err(unavailable)?;
    let registered = nodes
        .iter()
        .filter(|n| n.role == Role::Verifier)
        .map(|n| n.key)
        .collect();
    let s = check_slash(&req, &registered, params.params.dispute_quorum)
        .map_err(HttpError::unprocessable)?;
    let digest = slash_digest(&s, &domain(req.chain_id, req.contract));
    sign_digest(node.evm(), &digest)
        .map(Json)
        .map_err(HttpError::internal)
}
