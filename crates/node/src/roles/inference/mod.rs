//! The inference role: runs one or more models and answers signed Requests
//! with signed Results, streaming the text as it is generated.
//!
//! `POST /inference/respond` (an authenticated message whose body is the
//! Request) answers with newline-delimited JSON [`InferenceEvent`]s: text
//! as it is generated, then the signed Result (or an error). A node built
//! with a [`Fault`] cheats in that way on every request, with properly
//! signed Results: the devnet's `--faulty-inference` uses it to show the
//! network catching cheaters.
//!
//! Each model runs on an engine and a thread of its own; a Request for a
//! model the node does not run is refused with 404 naming `model` (the
//! gateway routes by the models a node declares, so it is a stale view,
//! never a node failure).
//!
//! The node works only for registered gateways (403 for anyone else) and
//! only on a Request the ledger holds a reservation for, so its compute is
//! always paid for. Requests wait in a bounded queue (429 with `Retry-After`
//! when it is full); a request whose client left is dropped if still
//! waiting and stopped at its next token if running.

use crate::auth::Gate;
use crate::http::{Admits, HttpError, Queue, Signed, Ticket};
use crate::membership::Registry;
use crate::wire::{InferenceEvent, NodeError, NodeInfo, ServedModel};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use verinfer_inference::engine::{Step, StepCallback};
use verinfer_inference::respond::{self, ErrorClass, Fault, RespondError};
use verinfer_inference::Engine;
use verinfer_types::records::Request;
use verinfer_types::{Hash, PublicKey, Record, SecretKey};

/// Most requests decoded together.
const MAX_BATCH: usize = 8;
/// Requests waiting for the engine at most, by default.
pub const DEFAULT_QUEUE: usize = 32;

/// A request waiting for the engine, with where its events go and its
/// place in the queue (given back when the job is done).
struct Job {
    request: Request,
    events: mpsc::Sender<InferenceEvent>,
    _place: Ticket,
}

impl Job {
    /// Whether the client left (the response stream was dropped).
    fn abandoned(&self) -> bool {
        self.events.is_closed()
    }
}

/// One model the node runs: where its engine's jobs go, and its figures.
struct Model {
    jobs: Sender<Job>,
    served: ServedModel,
}

/// The inference role's state.
pub struct InferenceNode {
    /// By model id.
    models: BTreeMap<Hash, Model>,
    queue: Queue,
    key: SecretKey,
    gate: Gate,
    registry: Arc<Registry>,
}

impl InferenceNode {
    /// A node running `engines` (each with its model file id), signing
    /// with `key`, honest unless `fault` is given, admitting signed messages
    /// with `gate`, serving the gateways of `registry`, with at most `queue`
    /// requests waiting or running. Each engine runs on a thread of its
    /// own: an honest node decodes the requests for one model waiting at the
    /// same time in one batch (each answer is what it would be alone).
    pub fn new(
        engines: Vec<(Engine, Hash)>,
        key: SecretKey,
        fault: Option<Fault>,
        gate: Gate,
        registry: Arc<Registry>,
        queue: usize,
    ) -> Arc<Self> {
        let models = engines
            .into_iter()
            .map(|(engine, model_id)| {
                let served = ServedModel {
                    id: model_id,
                    context_len: u32::try_from(engine.model().max_seq_len()).unwrap_or(u32::MAX),
                    vocab_size: u32::try_from(engine.model().config.vocab).unwrap_or(u32::MAX),
                };
                let (jobs, rx) = std::sync::mpsc::channel();
                let worker = Worker {
                    engine,
                    model_id,
                    key: key.clone(),
                    fault: fault.clone(),
                };
                std::thread::Builder::new()
                    .name("inference".into())
                    .spawn(move || worker.run(rx))
                    .ok();
                (model_id, Model { jobs, served })
            })
            .collect();
        Arc::new(InferenceNode {
            models,
            queue: Queue::new(queue, "this inference node's queue"),
            key,
            gate,
            registry,
        })
    }

    /// The engine of `model`: 404 naming `model` when this node does not
    /// run it.
    fn model(&self, model: &Hash) -> Result<&Model, HttpError> {
        self.models
            .get(model)
            .ok_or_else(|| HttpError::model_not_served(model, self.models.keys()))
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
type Stream = Box<dyn FnMut(Step<'_>)>;

/// When a job's first and last token came.
type Mark = Rc<Cell<Option<(Instant, Instant)>>>;

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
    let status = match e.class() {
        ErrorClass::BadRequest => 400,
        ErrorClass::TooLarge => 413,
        ErrorClass::Unavailable => 503,
    };
    InferenceEvent::Error(NodeError {
        status,
        message: e.to_string(),
    })
}

impl Worker {
    fn run(mut self, jobs: Receiver<Job>) {
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
            // Nobody waits for these any more: never start them.
            batch.retain(|j| !j.abandoned());
            if batch.is_empty() {
                continue;
            }
            match &self.fault {
                Some(fault) => {
                    // One at a time: a client may leave while others are answered.
                    for job in batch.into_iter().filter(|j| !j.abandoned()) {
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
        let start = Instant::now();
        // When each job's first and last token came (the latency events).
        let marks: Vec<Mark> = batch.iter().map(|_| Rc::default()).collect();
        // One stream per job: its text goes to its own client.
        let mut streams: Vec<Stream> = batch
            .iter()
            .zip(&marks)
            .map(|(j, mark)| {
                let events = j.events.clone();
                let mark = mark.clone();
                // Log-probabilities go out with the text their tokens
                // release (a token may release none yet).
                let mut logprobs = Vec::new();
                Box::new(move |s: Step<'_>| {
                    let now = Instant::now();
                    mark.set(Some(
                        mark.get().map_or((now, now), |(first, _)| (first, now)),
                    ));
                    logprobs.extend(s.logprob.cloned());
                    if s.text.is_empty() {
                        return;
                    }
                    let text = s.text.to_string();
                    send(
                        &events,
                        if logprobs.is_empty() {
                            InferenceEvent::Text(text)
                        } else {
                            InferenceEvent::Tokens {
                                text,
                                logprobs: std::mem::take(&mut logprobs),
                            }
                        },
                    );
                }) as Stream
            })
            .collect();
        let callbacks: Vec<StepCallback<'_>> = streams
            .iter_mut()
            .map(|b| b.as_mut() as StepCallback<'_>)
            .collect();
        let results = respond::respond_batch_steps(
            &mut self.engine,
            self.model_id,
            &requests,
            &self.key,
            callbacks,
            &mut |i| batch[i].abandoned(),
        );
        let end = Instant::now();
        for ((job, r), mark) in batch.iter().zip(results).zip(&marks) {
            if let (Ok(r), Some((first, last))) = (&r, mark.get()) {
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                tracing::debug!(target: "latency", request = %r.request, batch = batch.len(),
                    prefill = ms(first - start), decode = ms(last - first),
                    sign = ms(end - last), "node");
            }
            match r {
                Ok(r) => send(&job.events, InferenceEvent::Result(Box::new(r))),
                Err(e) => send(&job.events, error_event(e)),
            }
        }
    }
}

/// Requests are the gateways' to send.
impl Admits<Request> for InferenceNode {
    const WHAT: &'static str = "request";
    fn gate(&self) -> &Gate {
        &self.gate
    }
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send {
        self.registry.require_gateway(sender)
    }
}

async fn respond_handler(
    State(node): State<Arc<InferenceNode>>,
    Signed { body: request, .. }: Signed<Request>,
) -> Result<Response, HttpError> {
    let jobs = node.model(&request.model)?.jobs.clone();
    let hash = request
        .hash()
        .map_err(|e| HttpError::bad_request(format!("request: {e}")))?;
    node.registry
        .require_reservation(&hash, &request.requester)
        .await?;
    let place = node.queue.enter()?;
    let (tx, rx) = mpsc::channel(256);
    jobs.send(Job {
        request,
        events: tx,
        _place: place,
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
    Json(NodeInfo::serving(
        node.key.public(),
        "inference",
        node.models.values().map(|m| m.served.clone()).collect(),
    ))
}

impl std::fmt::Debug for InferenceNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceNode").finish_non_exhaustive()
    }
}
