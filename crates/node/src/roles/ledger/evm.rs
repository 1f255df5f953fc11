//! The ledger role's EVM duties: its settler asks the registered verifiers
//! to sign each settlement, slash and vault claim ([`HttpCosigners`]; the verifiers'
//! side is `roles::verifier::evm`), and two routes:
//!
//! - `POST /ledger/evm/link`: an account's signed EVM address;
//! - `GET /ledger/evm`: the contract, the settled checkpoint and the
//!   transactions mined so far.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use verinfer_ledger::evm::netting::{ClaimRequest, EvmSignature, SettlementRequest, SlashRequest};
use verinfer_ledger::evm::settler::{BoxFuture, Cosigners};
use verinfer_ledger::evm::Link;
use verinfer_ledger::tx::Role;
use verinfer_ledger::Ledger;
use verinfer_types::{PublicKey, SecretKey};

use super::LedgerNode;
use crate::client::Peer;
use crate::http::HttpError;

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
    fn claim<'a>(&'a self, req: &'a ClaimRequest) -> BoxFuture<'a, Vec<EvmSignature>> {
        Box::pin(async move {
            match serde_json::to_vec(req) {
                Ok(body) => self.ask("/verifier/evm/claim", body).await,
                Err(_) => Vec::new(),
            }
        })
    }
}

/// `POST /ledger/evm/link`.
pub async fn add_link(
    State(node): State<Arc<LedgerNode>>,
    Json(link): Json<Link>,
) -> Result<StatusCode, HttpError> {
    let s = node
        .settler()
        .ok_or_else(|| HttpError::not_found("this ledger does not settle on a chain"))?;
    s.add_link(link).map_err(HttpError::unprocessable)?;
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
