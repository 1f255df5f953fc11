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
//!   the registry the verifier reads from its ledger); the contract's
//!   `challenge` of a held optimistic answer takes the same signatures;
//! - `POST /verifier/evm/claim` (authenticated, from the ledger's key; body a
//!   [`ClaimRequest`]): the account's signed link, checked ([`check_claim`]),
//!   for the move of its vault to the address it linked.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use verinfer_ledger::evm::netting::{
    check_claim, check_settlement, check_slash, claim_digest, domain, slash_digest, ClaimRequest,
    EvmSignature, SettlementRequest, SlashRequest,
};
use verinfer_ledger::evm::settler::sign_digest;
use verinfer_log::witness::verify_cosignature;
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::{Note, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::{PublicKey, Record as _};
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

/// Vault claims are the ledger's to ask for.
impl Admits<ClaimRequest> for VerifierNode {
    const WHAT: &'static str = "claim";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_ledger(sender)
    }
}

/// `POST /verifier/evm/claim`.
pub async fn sign_claim(
    State(node): State<Arc<VerifierNode>>,
    Signed { body: req, .. }: Signed<ClaimRequest>,
) -> Result<Json<EvmSignature>, HttpError> {
    let claim = check_claim(&req).map_err(HttpError::unprocessable)?;
    let digest = claim_digest(&claim, &domain(req.chain_id, req.contract));
    sign_digest(node.evm(), &digest)
        .map(Json)
        .map_err(HttpError::internal)
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
    // Who was registered at the Result's anchor is the ledger's word, not
    // the caller's.
    let ledger = node.ledger().ok_or_else(|| {
        HttpError::unprocessable("this verifier knows no ledger to read the registry from")
    })?;
    let unavailable = |e: crate::client::ClientError| {
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the registry from the ledger: {e}"),
        )
    };
    let result = req
        .evidence
        .parts()
        .0
        .hash()
        .map_err(HttpError::unprocessable)?;
    let (anchor, params) =
        futures_util::try_join!(ledger.anchor(&result), ledger.params()).map_err(unavailable)?;
    let anchor = anchor.ok_or_else(|| {
        HttpError::unprocessable(format!(
            "the result {result} was never committed: no checkpoint anchors its committee"
        ))
    })?;
    let eligible = anchor.eligible.into_iter().collect();
    let s = check_slash(
        &req,
        &eligible,
        anchor.time_ms,
        params.params.dispute_quorum,
    )
    .map_err(HttpError::unprocessable)?;
    let digest = slash_digest(&s, &domain(req.chain_id, req.contract));
    sign_digest(node.evm(), &digest)
        .map(Json)
        .map_err(HttpError::internal)
}
