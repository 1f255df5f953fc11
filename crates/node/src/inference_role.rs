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
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use verinfer_inference::engine::TokenCallback;
use verinfer_inference::respond::{self, Fault, RespondError};
use verinfer_inference::{Engine, ENGINE_VERSION};
use verinfer_types::records::Request;
use verinfer_types::{Hash, SecretKey};

/// Most requests decoded together.
const MAX_BATCH: usize = 8;

/// A request waiting for the engine, with where its events go.
struct Job {
    request: Request,
    events: mpsc::Sender<InferenceEvent>,
}

/// The inference role's state.
pub struct InferenceNode {
    jobs: std::sync::mpsc::Sender<Job>,
    model_id: Hash,
    key: SecretKey,
    gate: Gate,
    context_len: usize,
    vocab_size: usize,
}

impl InferenceNode {
    /// A node running `engine` (model file id `model_id`), signing with
    /// `key`, honest unless `fault` is given. The engine runs on a thread of
    /// its own: an honest node decodes the requests waiting at the same time
    /// in one batch (each answer is what it would be alone).
    pub fn new(engine: Engine, model_id: Hash, key: SecretKey, fault: Option<Fault>) -> Arc<Self> {
        let context_len = engine.model().max_seq_len();
        let vocab_size = engine.model().config.vocab;
        let (jobs, rx) = std::sync::mpsc::channel();
        let worker = Worker {
            engine,
            model_id,
            key: key.clone(),
            fault,
        };
        std::thread::Builder::new()
            .name("inference".into())
            .spawn(move || worker.run(rx))
            .ok();
        Arc::new(InferenceNode {
            jobs,
            model_id,
            key,
            gate: Gate::new(),
            context_len,
            vocab_size,
        })
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/inference/respond", post(respond_handler))
            .route("/node/info", get(info))
            .with_state(self.clone())
    }
}

/// A job's token callback.
type Stream = Box<dyn FnMut(u32, &str)>;

/// The engine's thread.
struct Worker {
    engine: Engine,
    model_id: Hash,
    key: SecretKey,
    fault: Option<Fault>,
}

fn send(events: &mpsc::Sender<InferenceEvent>, ev: InferenceEvent) {
    let _ = events.blocking_send(ev);
}

fn error_event(e: RespondError) -> InferenceEvent {
    let status = match &e {
        RespondError::WrongModel { .. } | RespondError::Record(_) => 400,
        RespondError::Engine(verinfer_inference::LlmError::ContextOverflow { .. }) => 413,
        _ => 503,
    };
    InferenceEvent::Error(NodeError {
        status,
        message: e.to_string(),
    })
}

impl Worker {
    fn run(mut self, jobs: std::sync::mpsc::Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut batch = vec![first];
            // An honest node takes everything already waiting; a cheating
            // one answers one at a time (its faults work on single answers).
            while self.fault.is_none() && batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            match &self.fault {
                Some(fault) => {
                    for job in batch {
                        let r = respond::respond_with_fault(
                            &mut self.engine,
                            self.model_id,
                            &job.request,
                            &self.key,
                            fault,
                        );
                        match r {
                            Ok(r) => {
                                send(&job.events, InferenceEvent::Text(r.output_text.clone()));
                                send(&job.events, InferenceEvent::Result(Box::new(r)));
                            }
                            Err(e) => send(&job.events, error_event(e)),
                        }
                    }
                }
                None => self.answer(batch),
            }
        }
    }

    fn answer(&mut self, batch: Vec<Job>) {
        let requests: Vec<Request> = batch.iter().map(|j| j.request.clone()).collect();
        // One stream per job: its text goes to its own client.
        let mut streams: Vec<Stream> = batch
            .iter()
            .map(|j| {
                let events = j.events.clone();
                Box::new(move |_: u32, text: &str| {
                    if !text.is_empty() {
                        send(&events, InferenceEvent::Text(text.to_string()));
                    }
                }) as Stream
            })
            .collect();
        let callbacks: Vec<TokenCallback<'_>> = streams
            .iter_mut()
            .map(|b| b.as_mut() as TokenCallback<'_>)
            .collect();
        let results = respond::respond_batch(
            &mut self.engine,
            self.model_id,
            &requests,
            &self.key,
            callbacks,
        );
        for (job, r) in batch.iter().zip(results) {
            match r {
                Ok(r) => send(&job.events, InferenceEvent::Result(Box::new(r))),
                Err(e) => send(&job.events, error_event(e)),
            }
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
    node.jobs
        .send(Job {
            request,
            events: tx,
        })
        .map_err(|_| HttpError(StatusCode::SERVICE_UNAVAILABLE, "the engine stopped".into()))?;
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
        vocab_size: u32::try_from(node.vocab_size).unwrap_or(u32::MAX),
    })
}
