//! The EVM settlement backend over the network: the ledger role's
//! settler asks the registered verifiers to sign each settlement and slash,
//! and the verifiers check before they sign.
//!
//! - `POST /verifier/evm/settlement` (authenticated, from the ledger's key; body a
//!   [`SettlementRequest`]): the verifier opens the checkpoint note with the
//!   log's key, requires its own cosignature on it (it vouched for that
//!   history), checks every receipt's inclusion and the netting
//!   ([`check_settlement`]), and answers its EIP-712 signature;
//! - `POST /verifier/evm/slash` (authenticated, from the ledger's key; body a
//!   [`SlashRequest`]): the same for slash evidence ([`check_slash`], against
//!   the registry the verifier reads from its ledger);
//! - `POST /ledger/evm/link`: an account's signed EVM address;
//! - `GET /ledger/evm`: the contract, the settled checkpoint and the
//!   transactions mined so far.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Json;
use serde_json::{json, Value};
use verinfer_ledger::evm::netting::{
    check_settlement, check_slash, domain, slash_digest, EvmSignature, SettlementRequest,
    SlashRequest,
};
use verinfer_ledger::evm::settler::{sign_digest, BoxFuture, Cosigners};
use verinfer_ledger::evm::Link;
use verinfer_ledger::tx::Role;
use verinfer_ledger::Ledger;
use verinfer_log::witness::verify_cosignature;
use verinfer_log::SignedCheckpoint;
use verinfer_types::note::{Note, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::Record as _;
use verinfer_types::{PublicKey, SecretKey};
use verinfer_verify::receipt::witness_name;

use crate::client::Peer;
use crate::http::HttpError;
use crate::ledger_role::LedgerNode;
use crate::verifier_role::VerifierNode;

/// The registered verifiers, asked over HTTP.
pub struct HttpCosigners {
    ledger: Arc<Ledger>,
    peer: Peer,
}

impl HttpCosigners {
    /// Cosigners of `ledger`'s verifiers, called with `key`'s signature.
    pub fn new(ledger: Arc<Ledger>, key: SecretKey) -> Self {
        HttpCosigners {
            ledger,
            peer: Peer::new(key),
        }
    }

    async fn ask(&self, path: &str, body: Vec<u8>) -> Vec<EvmSignature> {
        let verifiers: Vec<(PublicKey, String)> = self.ledger.with_state(|s| {
            s.nodes
                .iter()
                .filter(|(_, n)| n.role == Role::Verifier)
                .map(|(k, n)| (*k, n.endpoint.clone()))
                .collect()
        });
        let calls = verifiers.iter().map(|(k, e)| {
            let body = body.clone();
            async move {
                let r = self
                    .peer
                    .post(k, e, path, body, Duration::from_secs(30))
                    .await;
                match r {
                    Ok(resp) => resp.json::<EvmSignature>().await.ok(),
                    Err(err) => {
                        tracing::debug!(verifier = %e, error = %err, "no EVM signature");
                        None
                    }
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

impl Cosigners for HttpCosigners {
    fn settlement<'a>(&'a self, req: &'a SettlementRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            match serde_json::to_vec(req) {
                Ok(body) => self.ask("/verifier/evm/settlement", body).await,
                Err(_) => Vec::new(),
            }
        })
    }
    fn slash<'a>(&'a self, req: &'a SlashRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            match serde_json::to_vec(req) {
                Ok(body) => self.ask("/verifier/evm/slash", body).await,
                Err(_) => Vec::new(),
            }
        })
    }
}

fn refused(e: impl std::fmt::Display) -> HttpError {
    HttpError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

/// `POST /verifier/evm/settlement`.
pub async fn sign_settlement(
    State(node): State<Arc<VerifierNode>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EvmSignature>, HttpError> {
    node.ledger_only(&method, &uri, &headers, &body).await?;
    let req: SettlementRequest = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("settlement: {e}")))?;
    let n = node.clone();
    crate::http::blocking(move || {
        let cp = SignedCheckpoint::open(&req.checkpoint, n.log_key())
            .map_err(refused)?
            .checkpoint;
        let me = n.key().public();
        let vk = VerifierKey::new(&witness_name(&me), ALG_COSIGNATURE_V1, me).map_err(refused)?;
        let note = Note::parse(&req.checkpoint).map_err(refused)?;
        verify_cosignature(&note, &vk)
            .map_err(|e| refused(format!("not a checkpoint this verifier cosigned: {e}")))?;
        let batch = check_settlement(&req, cp.size, &cp.root).map_err(refused)?;
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
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<EvmSignature>, HttpError> {
    node.ledger_only(&method, &uri, &headers, &body).await?;
    let req: SlashRequest =
        serde_json::from_slice(&body).map_err(|e| HttpError::bad_request(format!("slash: {e}")))?;
    if req.accused.account == node.key().public() {
        return Err(refused("a verifier does not sign its own slash"));
    }
    // Who was registered at the Result's anchor is the ledger's word, not
    // the caller's.
    let ledger = node
        .ledger()
        .ok_or_else(|| refused("this verifier knows no ledger to read the registry from"))?;
    let unavailable = |e: crate::client::ClientError| {
        HttpError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot read the registry from the ledger: {e}"),
        )
    };
    let result = req.evidence.parts().0.hash().map_err(refused)?;
    let (anchor, params) =
        futures_util::try_join!(ledger.anchor(&result), ledger.params()).map_err(unavailable)?;
    let anchor = anchor.ok_or_else(|| {
        refused(format!(
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
    .map_err(refused)?;
    let digest = slash_digest(&s, &domain(req.chain_id, req.contract));
    sign_digest(node.evm(), &digest)
        .map(Json)
        .map_err(HttpError::internal)
}

/// `POST /ledger/evm/link`.
pub async fn add_link(
    State(node): State<Arc<LedgerNode>>,
    Json(link): Json<Link>,
) -> Result<StatusCode, HttpError> {
    let s = node
        .settler()
        .ok_or_else(|| HttpError::not_found("this ledger does not settle on a chain"))?;
    s.add_link(link).map_err(refused)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /ledger/evm`: where value settles, and what was settled.
pub async fn status(State(node): State<Arc<LedgerNode>>) -> Result<Json<Value>, HttpError> {
    let Some(s) = node.settler() else {
        return Ok(Json(json!({ "backend": "embedded" })));
    };
    let c = s.chain();
    let settled = c.checkpoint().await.ok();
    Ok(Json(json!({
        "backend": "evm",
        "chain_id": c.chain_id,
        "contract": c.contract,
        "settled_size": settled.map(|s| s.0),
        "settled_root": settled.map(|s| s.1),
        "transactions": s.history().into_iter().rev().take(200).collect::<Vec<_>>(),
    })))
}

impl std::fmt::Debug for HttpCosigners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCosigners").finish_non_exhaustive()
    }
}
