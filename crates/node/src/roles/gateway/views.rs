//! The gateway's JSON views: models, receipts, the network and its nodes,
//! the ledger's summary, this node's info, the devnet's demo key.

use super::directory;
use super::openai::ApiError;
use super::state::Gateway;
use crate::wire::{NodeInfo, SummaryView};
use axum::extract::rejection::ExtensionRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use verinfer_ledger::tx::Role;
use verinfer_types::Hash;
use verinfer_verify::receipt::ReceiptBundle;

pub(super) async fn models(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let params = gw
        .directory
        .params()
        .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
    let data: Vec<Value> = params
        .models
        .iter()
        .map(|m| {
            json!({
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "verinfer",
                "verinfer": {
                    "model_id": m.id,
                    "price_in": m.price_in,
                    "price_out": m.price_out,
                    "per_tokens": m.per_tokens,
                    "publisher": m.publisher,
                    "inference_nodes": gw.directory.live(Role::Inference, &m.id).len(),
                    "verifiers": gw.directory.live(Role::Verifier, &m.id).len(),
                }
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

pub(super) async fn receipt(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ReceiptBundle>, ApiError> {
    let id: Hash = id
        .parse()
        .map_err(|_| ApiError::field("id", "a receipt id is 64 hex digits"))?;
    // The ledger discloses the text only to a read signed by the requester's
    // key: the gateway signs with the account key it holds for a valid API
    // key, and reads anonymously (leaf and proofs) for anyone else.
    let path = format!("/ledger/receipts/{id}");
    let mut read = gw
        .peer
        .http()
        .get(format!("{}{path}", gw.ledger.base))
        .timeout(Duration::from_secs(10));
    let owner = gw.account(&headers).ok().map(|(_, a)| a.key.clone());
    if let Some(key) = &owner {
        let ledger = gw
            .ledger
            .node_key()
            .await
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        read = read.headers(crate::auth::sign(key, &ledger, "GET", &path, b""));
    }
    let unavailable = |e: reqwest::Error| ApiError::unavailable(e.to_string());
    let resp = read.send().await.map_err(unavailable)?;
    match resp.status().as_u16() {
        200 => {}
        404 => return Err(ApiError::not_found(format!("no receipt {id} (yet)"))),
        s => {
            return Err(ApiError::unavailable(format!(
                "the ledger answered HTTP {s}: {}",
                resp.text().await.unwrap_or_default()
            )))
        }
    }
    let mut bundle: ReceiptBundle = resp.json().await.map_err(unavailable)?;
    // Checked here too: the text is for the account that paid for it.
    if owner.map(|k| k.public()) != Some(bundle.leaf.requester) {
        bundle.receipt = None;
    }
    Ok(Json(bundle))
}

/// `/v1/answers/{request}`: what became of an answer delivered as
/// `pending`, to the API key of the account that asked for it.
pub(super) async fn answer_status(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(request): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (_, account) = gw.account(&headers)?;
    let request: Hash = request
        .parse()
        .map_err(|_| ApiError::field("request", "a request hash is 64 hex digits"))?;
    let p = gw
        .pending
        .get(&request)
        .filter(|p| p.request.requester == account.key.public())
        .ok_or_else(|| ApiError::not_found(format!("no pending answer to request {request}")))?;
    let mut body = json!({"request": request, "status": "pending", "until_ms": p.until_ms});
    // The outcome's fields: `status`, and `receipt_id` and `log_index` or
    // `reason`.
    if let Some(Value::Object(o)) = p
        .outcome
        .map(|o| serde_json::to_value(o).unwrap_or_default())
    {
        if let Some(id) = o.get("receipt_id").and_then(Value::as_str) {
            body["receipt_url"] = json!(format!("/v1/receipts/{id}"));
        }
        for (k, v) in o {
            body[k] = v;
        }
    }
    Ok(Json(body))
}

pub(super) async fn summary(State(gw): State<Arc<Gateway>>) -> Result<Json<SummaryView>, ApiError> {
    gw.ledger
        .summary()
        .await
        .map(Json)
        .map_err(|e| ApiError::unavailable(e.to_string()))
}

fn node_json(gw: &Gateway, m: &directory::Member) -> Value {
    json!({
        "key": m.view.key,
        "role": m.view.role,
        "endpoint": m.view.endpoint,
        "stake": m.view.stake.to_string(),
        "live": gw.directory.is_live(m),
        "last_seen_ms": m.view.last_seen_ms,
        "last_heartbeat_height": m.view.last_heartbeat,
        "registered_height": m.view.registered,
        "models": m.info.as_ref().map(|i| i.models.clone()).unwrap_or_default(),
        "engine": m.info.as_ref().map(|i| i.engine.clone()).unwrap_or_default(),
    })
}

pub(super) async fn network(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let params = gw
        .directory
        .params()
        .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
    let members = gw.directory.members();
    let nodes: Vec<Value> = members.iter().map(|m| node_json(&gw, m)).collect();
    let live = |role: Role| {
        members
            .iter()
            .filter(|m| m.view.role == role && gw.directory.is_live(m))
            .count()
    };
    Ok(Json(json!({
        "gateway": gw.peer.key().public(),
        "log_key": params.log_key,
        "witness_quorum": params.witness_quorum,
        "ledger_height": params.height,
        "params": params.params,
        "models": params.models,
        "nodes": nodes,
        "live": {"inference": live(Role::Inference), "verifiers": live(Role::Verifier)},
        "counters": gw.counters.snapshot(),
    })))
}

/// `/v1/devnet`: the demo key, to the chat page of someone at this machine
/// only (whoever reaches the gateway from elsewhere gets a 403).
pub(super) async fn devnet_info(
    State(gw): State<Arc<Gateway>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> Result<Json<Value>, ApiError> {
    let Some(k) = &gw.config.demo_api_key else {
        return Err(ApiError::not_found("this gateway has no demo key"));
    };
    // Unknown when the server was not started with connection info: refused.
    if !peer.is_ok_and(|ConnectInfo(a)| a.ip().is_loopback()) {
        return Err(ApiError::forbidden(
            "the demo key is served to clients on this machine only",
        ));
    }
    Ok(Json(json!({ "api_key": k })))
}

pub(super) async fn info(State(gw): State<Arc<Gateway>>) -> Json<NodeInfo> {
    Json(NodeInfo {
        key: gw.peer.key().public(),
        role: "gateway".into(),
        models: Vec::new(),
        engine: String::new(),
        context_len: 0,
        vocab_size: 0,
        served: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::gateway::GatewayConfig;
    use axum::extract::connect_info::MockConnectInfo;
    use verinfer_types::SecretKey;

    /// Attack: `/v1/devnet` handed the demo key (the demo account's
    /// balance) to any client that reached the gateway.
    #[tokio::test]
    async fn the_demo_key_goes_to_loopback_clients_only() {
        let config = GatewayConfig {
            demo_api_key: Some("vi-demo".into()),
            ..Default::default()
        };
        let gw = Gateway::start(SecretKey::generate(), "http://127.0.0.1:9", config)
            .await
            .expect("gateway");
        for (from, want) in [([127, 0, 0, 1], 200), ([192, 0, 2, 7], 403)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let app = gw
                .router()
                .layer(MockConnectInfo(SocketAddr::from((from, 4000))));
            tokio::spawn(async move { axum::serve(listener, app).await });
            let r = reqwest::get(format!("{url}/v1/devnet"))
                .await
                .expect("request");
            assert_eq!(r.status().as_u16(), want, "from {from:?}");
            let body = r.text().await.expect("body");
            assert_eq!(body.contains("vi-demo"), want == 200, "{body}");
        }
    }
}
