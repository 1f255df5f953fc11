//! The inference role: runs a model and answers signed Requests with signed
//! Results, streaming the text as it is generated.
//!
//! `POST /inference/respond` (an authenticated message whose body is the
//! Request) answers with newline-delimited JSON [`InferenceEvent`]s: text
//! as it is generated, then the signed Result (or an error). A node built
//! with a [`Fault`] cheats in that way on every request, with properly
//! signed Results: the devnet's `--faulty-inference` uses it to show the
//! network catching cheaters.

use crate::auth::Gate;
use crate::http::{authenticate, HttpError};
use crate::wire::{InferenceEvent, NodeError, NodeInfo};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use verinfer_inference::respond::{self, Fault, RespondError};
use verinfer_inference::{Engine, ENGINE_VERSION};
use verinfer_types::records::Request;
use verinfer_types::{Hash, SecretKey};

/// The inference role's state.
pub struct InferenceNode {
    engine: Mutex<Engine>,
    model_id: Hash,
    key: SecretKey,
    fault: Option<Fault>,
    gate: Gate,
    context_len: usize,
}

impl InferenceNode {
    /// A node running `engine` (model file id `model_id`), signing with
    /// `key`, honest unless `fault` is given.
    pub fn new(engine: Engine, model_id: Hash, key: SecretKey, fault: Option<Fault>) -> Arc<Self> {
        let context_len = engine.model().max_seq_len();
        Arc::new(InferenceNode {
            engine: Mutex::new(engine),
            model_id,
            key,
            fault,
            gate: Gate::new(),
            context_len,
        })
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/inference/respond", post(respond_handler))
            .route("/node/info", get(info))
            .with_state(self.clone())
    }

    /// Answers `request`, sending events to `tx` (blocking; call off the runtime).
    fn answer(&self, request: &Request, tx: &mpsc::Sender<InferenceEvent>) {
        let fail = |status: u16, message: String| {
            let _ = tx.blocking_send(InferenceEvent::Error(NodeError { status, message }));
        };
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        let prompt = match respond::prompt_tokens(&engine, &request.input) {
            Ok(p) => p,
            Err(e) => return fail(400, format!("input: {e}")),
        };
        if prompt.len() >= self.context_len {
            return fail(
                413,
                format!(
                    "prompt of {} tokens does not fit the model's context of {} tokens",
                    prompt.len(),
                    self.context_len
                ),
            );
        }
        let result = match &self.fault {
            None => respond::respond(
                &mut engine,
                self.model_id,
                request,
                &self.key,
                &mut |_, text| {
                    if !text.is_empty() {
                        let _ = tx.blocking_send(InferenceEvent::Text(text.to_string()));
                    }
                },
            ),
            Some(fault) => {
                respond::respond_with_fault(&mut engine, self.model_id, request, &self.key, fault)
                    .inspect(|r| {
                        let _ = tx.blocking_send(InferenceEvent::Text(r.output_text.clone()));
                    })
            }
        };
        match result {
            Ok(r) => {
                let _ = tx.blocking_send(InferenceEvent::Result(Box::new(r)));
            }
            Err(e @ (RespondError::WrongModel { .. } | RespondError::Record(_))) => {
                fail(400, e.to_string())
            }
            Err(e) => fail(503, e.to_string()),
        }
    }
}

async fn respond_handler(
    State(node): State<Arc<InferenceNode>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, HttpError> {
    authenticate(&node.gate, &method, &uri, &headers, &body)?;
    let request: Request = serde_json::from_slice(&body)
        .map_err(|e| HttpError::bad_request(format!("request: {e}")))?;
    if request.model != node.model_id {
        return Err(HttpError(
            StatusCode::NOT_FOUND,
            format!(
                "this node serves model {}, not {}",
                node.model_id, request.model
            ),
        ));
    }
    let (tx, rx) = mpsc::channel(256);
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.answer(&request, &tx));
    let lines = ReceiverStream::new(rx).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    Ok((
        [("content-type", "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn info(State(node): State<Arc<InferenceNode>>) -> Json<NodeInfo> {
    Json(NodeInfo {
        key: node.key.public(),
        role: "inference".into(),
        models: vec![node.model_id],
        engine: ENGINE_VERSION.into(),
        context_len: u32::try_from(node.context_len).unwrap_or(u32::MAX),
    })
}
