//! The gateway role: the network's front door.
//!
//! It serves the OpenAI-compatible API (`/v1/chat/completions` and
//! `/v1/completions` to API-key holders, each key mapped to a ledger account
//! whose key the gateway holds and signs for; `/v1/models` to anyone); routes every
//! request through inference, verification and settlement ([`flow`]); and
//! serves receipts, the log, the network's state and metrics.

pub mod directory;
pub mod flow;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod pages;
pub mod pending;
mod report;
pub mod settle;
pub mod stream;
pub mod tools;
mod watch;

use crate::client::{LedgerClient, Peer};
use crate::http::HttpError;
use crate::wire::{NodeInfo, SummaryView};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, ExtensionRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use directory::Directory;
use flow::{Answer, Event};
use futures_util::StreamExt;
use metrics::Counters;
use openai::{ApiError, Status, VerinferInfo};
use serde_json::{json, Value};
use settle::Settler;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use verinfer_ledger::tx::{ModelEntry, Role};
use verinfer_types::records::{Policy, TokenLogprob, VerificationMode};
use verinfer_types::{Hash, SecretKey};
use verinfer_verify::receipt::ReceiptBundle;

/// An API key's ledger account.
pub struct Account {
    /// The account key the gateway signs with.
    pub key: SecretKey,
    /// Serialises this account's transactions (their nonces are sequential).
    pub turn: tokio::sync::Mutex<()>,
}

/// Gateway settings.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// The SHA-256 of each API key and the account key it maps to (the
    /// gateway never holds the API keys themselves).
    pub api_keys: Vec<(Hash, SecretKey)>,
    /// Verification mode of requests that do not ask for one.
    pub default_verification: VerificationMode,
    /// Requests per minute per API key.
    pub rate_per_minute: u32,
    /// Burst of requests per API key.
    pub burst: u32,
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// A node is live while its last heartbeat is younger than this.
    pub liveness: Duration,
    /// The devnet's demo API key, served to the chat page at `/v1/devnet`
    /// so that a newcomer chats without typing it (devnet only; to loopback
    /// clients only).
    pub demo_api_key: Option<String>,
    /// Where answers delivered before they were certified are kept until
    /// they settle ([`pending`]); `None` keeps them in memory only.
    pub data_dir: Option<std::path::PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            api_keys: Vec::new(),
            default_verification: VerificationMode::Quorum { k: 2 },
            rate_per_minute: 600,
            burst: 100,
            max_body_bytes: 1 << 20,
            liveness: Duration::from_secs(10),
            demo_api_key: None,
            data_dir: None,
        }
    }
}

/// The gateway's state.
pub struct Gateway {
    ledger: LedgerClient,
    peer: Peer,
    directory: Directory,
    settler: Settler,
    counters: Counters,
    /// By the SHA-256 of their API key.
    accounts: Vec<(Hash, Arc<Account>)>,
    limiter: limits::RateLimiter,
    /// Answers delivered before they were certified.
    pending: pending::Store,
    config: GatewayConfig,
}

impl Gateway {
    /// Starts a gateway signing with `key`, settling in the ledger at
    /// `ledger_url`; reads the registry every second.
    pub async fn start(
        key: SecretKey,
        ledger_url: &str,
        config: GatewayConfig,
    ) -> Result<Arc<Self>, pending::StoreError> {
        let pending = pending::Store::open(
            config
                .data_dir
                .as_deref()
                .map(|d| d.join("pending"))
                .as_deref(),
        )?;
        let ledger = LedgerClient::new(ledger_url, key.clone());
        let accounts = config
            .api_keys
            .iter()
            .map(|(hash, k)| {
                (
                    *hash,
                    Arc::new(Account {
                        key: k.clone(),
                        turn: tokio::sync::Mutex::new(()),
                    }),
                )
            })
            .collect();
        let gw = Arc::new(Gateway {
            directory: Directory::new(ledger.clone(), config.liveness),
            settler: Settler::start(ledger.clone(), key.clone()),
            peer: Peer::new(key),
            ledger,
            counters: Counters::default(),
            accounts,
            limiter: limits::RateLimiter::new(config.rate_per_minute, config.burst),
            pending,
            config,
        });
        if let Err(e) = gw.directory.refresh(&gw.peer).await {
            tracing::warn!(error = %e, "cannot read the registry yet");
        }
        let g = gw.clone();
        tokio::spawn(async move {
            g.directory
                .refresh_loop(g.peer.clone(), Duration::from_secs(1))
                .await
        });
        // Answers a previous run delivered and could not certify yet.
        for p in gw.pending.open_answers() {
            tokio::spawn(gw.clone().certify_later(p));
        }
        Ok(gw)
    }

    /// The gateway's counters.
    pub fn counters(&self) -> metrics::Snapshot {
        self.counters.snapshot()
    }

    /// Tells the ledger what only the gateway saw of one call (a rejected
    /// answer, results rejected per node, verifiers that missed a task), for
    /// the explorer's charts. In the background, retried until the ledger
    /// acknowledges it (it counts a call once, so a retry is harmless).
    fn report(&self, report: crate::wire::Report) {
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(_) => return,
        };
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_millis(200);
            for attempt in 1..=report::ATTEMPTS {
                match ledger
                    .post("/ledger/report", body.clone(), Duration::from_secs(5))
                    .await
                {
                    Ok(_) => return,
                    // Refused (403, 400): a retry gets the same answer.
                    Err(crate::client::ClientError::Status { status, body, .. })
                        if status < 500 =>
                    {
                        tracing::warn!(status, body, "call report refused");
                        return;
                    }
                    Err(e) if attempt == report::ATTEMPTS => {
                        tracing::warn!(error = %e, call = %report.call, "call report not taken");
                    }
                    Err(_) => {
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    /// The directory of nodes.
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Whether a live inference node and enough live verifiers serve some model.
    pub fn ready(&self) -> bool {
        let Some(p) = self.directory.params() else {
            return false;
        };
        p.models.iter().any(|m| {
            !self.directory.live(Role::Inference, &m.id).is_empty()
                && self.directory.live(Role::Verifier, &m.id).len() >= p.params.quorum as usize
        })
    }

    /// The routes.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/completions", post(completions))
            .route("/v1/models", get(models))
            .route("/v1/receipts/{id}", get(receipt))
            .route("/v1/answers/{request}", get(answer_status))
            .route("/v1/network", get(network))
            .route("/v1/ledger/summary", get(summary))
            .route("/metrics", get(metrics_text))
            .route("/log/{*path}", get(proxy))
            .route("/v1/explorer/{*path}", get(proxy))
            .route("/node/info", get(info))
            .route("/v1/devnet", get(devnet_info))
            .route("/", get(pages::chat))
            .route("/explorer", get(pages::explorer))
            .route("/explorer/{*rest}", get(pages::explorer))
            .route("/assets/{name}", get(pages::asset))
            .fallback(|| async { ApiError::not_found("no such endpoint") })
            .layer(DefaultBodyLimit::max(self.config.max_body_bytes))
            .with_state(self.clone())
    }

    /// The account of the request's API key, and the key's hash (hex, what
    /// the rate limiter counts by). Every stored hash is compared, in
    /// constant time, so the timing tells nothing about any of them.
    fn account(&self, headers: &HeaderMap) -> Result<(String, Arc<Account>), ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::unauthorized("missing API key: send `Authorization: Bearer KEY`")
            })?;
        let hash = crate::config::api_key_hash(token);
        let mut found = None;
        for (h, a) in &self.accounts {
            if bool::from(h.as_bytes()[..].ct_eq(&hash.as_bytes()[..])) {
                found = Some(a.clone());
            }
        }
        found
            .map(|a| (hash.to_hex(), a))
            .ok_or_else(|| ApiError::unauthorized("invalid API key"))
    }

    /// The account this gateway signs for with key `key`.
    fn account_of(&self, key: &verinfer_types::PublicKey) -> Option<Arc<Account>> {
        self.accounts
            .iter()
            .find(|(_, a)| a.key.public() == *key)
            .map(|(_, a)| a.clone())
    }

    /// What the live nodes of `model` announce; 503 when no inference node
    /// serves it.
    fn capacity(&self, model: &ModelEntry) -> Result<guard::Capacity, ApiError> {
        let nodes = self.directory.live(Role::Inference, &model.id);
        if nodes.is_empty() {
            return Err(ApiError::unavailable(
                "no live inference node serves this model right now",
            ));
        }
        // The nodes of one model id run the same file; the smallest figure
        // any announces is the safe one.
        let least = |f: fn(&NodeInfo) -> u32| {
            nodes
                .iter()
                .filter_map(|m| m.info.as_ref().map(f))
                .filter(|n| *n > 0)
                .min()
                .unwrap_or(0)
        };
        Ok(guard::Capacity {
            vocab_size: least(|i| i.vocab_size),
            context_len: least(|i| i.context_len),
            verifiers: self.directory.live(Role::Verifier, &model.id).len(),
            quorum: self.directory.params().map_or(0, |p| p.params.quorum),
        })
    }

    fn model(&self, name: &str) -> Result<ModelEntry, ApiError> {
        let params = self
            .directory
            .params()
            .ok_or_else(|| ApiError::unavailable("the gateway has not read the ledger yet"))?;
        let id: Option<Hash> = name.parse().ok();
        params
            .models
            .into_iter()
            .find(|m| m.name == name || Some(m.id) == id)
            .ok_or_else(|| ApiError::unknown_model(name))
    }
}

async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(gw, headers, body, true).await
}

async fn completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(gw, headers, body, false).await
}

async fn handle(
    gw: Arc<Gateway>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Response {
    Counters::inc(&gw.counters.requests);
    // A rejected body (too large, or broken off) was not read to its end, so
    // the server closes the connection after answering; saying so keeps a
    // client from sending its next request into the closed connection
    // (regression: a broken pipe on the request after a 413).
    let unread = body.is_err();
    let mut response = match start(&gw, &headers, body, chat).await {
        Ok(r) => r,
        Err(e) => {
            Counters::inc(&gw.counters.errors);
            e.into_response()
        }
    };
    if unread {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Authenticates, parses and starts serving; errors found before the first
/// event are returned as HTTP errors, later ones inside the stream.
async fn start(
    gw: &Arc<Gateway>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    chat: bool,
) -> Result<Response, ApiError> {
    let (api_key, account) = gw.account(headers)?;
    gw.limiter.take(&api_key).map_err(ApiError::rate_limited)?;
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(
                None,
                format!(
                    "the request body is larger than {} bytes",
                    gw.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(r.body_text())
        }
    })?;
    let mut parsed = openai::parse(&body, chat)?;
    let model = gw.model(&parsed.model)?;
    if parsed.decoding.temperature_milli > 0 && !parsed.seeded {
        // Sampling needs a seed in the record; draw one for the user.
        parsed.decoding.seed = rand::random::<u64>() & verinfer_types::canonical::MAX_SAFE_INTEGER;
    }
    let policy = parsed.policy.clone().unwrap_or(Policy {
        verification: gw.config.default_verification.clone(),
        json_schema: None,
    });
    // Everything that could refuse the request, before money is reserved,
    // a node runs or text streams.
    guard::precheck(
        &parsed.input,
        &parsed.decoding,
        &policy,
        &gw.capacity(&model)?,
    )?;
    // One Request per choice, each answered, verified and settled on its
    // own; sampled choices draw with consecutive seeds so that they differ.
    let requests: Vec<_> = (0..u64::from(parsed.n))
        .map(|i| {
            let mut decoding = parsed.decoding.clone();
            if decoding.temperature_milli > 0 {
                decoding.seed =
                    decoding.seed.wrapping_add(i) & verinfer_types::canonical::MAX_SAFE_INTEGER;
            }
            flow::new_request(
                account.key.public(),
                model.id,
                parsed.input.clone(),
                decoding,
                policy.clone(),
            )
        })
        .collect();
    let (all_tx, mut rx) = mpsc::channel::<(usize, Event)>(1024);
    for (i, request) in requests.into_iter().enumerate() {
        let (tx, mut choice_rx) = mpsc::channel::<Event>(1024);
        let all = all_tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = choice_rx.recv().await {
                if all.send((i, ev)).await.is_err() {
                    break;
                }
            }
        });
        let (g, m, account) = (gw.clone(), model.clone(), account.clone());
        tokio::spawn(async move {
            let done = g.serve(&account, &m, request, &tx).await;
            let _ = tx.send(Event::Done(Box::new(done))).await;
        });
    }
    drop(all_tx);
    let shape = Shape {
        chat,
        model: model.name.clone(),
        model_id: model.id,
        id: format!(
            "{}-{}",
            if chat { "chatcmpl" } else { "cmpl" },
            hex::encode(rand::random::<[u8; 12]>())
        ),
        created: crate::auth::now_ms() / 1000,
        // Calls are read from an answer only when the tool constraint
        // shaped it (with a response format, the format is the answer).
        tools: parsed.tools.clone().filter(|_| {
            matches!(
                parsed.decoding.constraint,
                Some(verinfer_types::records::Constraint::ToolCalls(_))
            )
        }),
        usage: Default::default(),
    };
    if !parsed.stream {
        let mut answers: Vec<Option<Answer>> = vec![None; parsed.n as usize];
        while let Some((i, ev)) = rx.recv().await {
            if let Event::Done(done) = ev {
                answers[i] = Some((*done)?);
            }
        }
        return match answers.into_iter().collect::<Option<Vec<_>>>() {
            Some(a) => Ok(shape.whole(&a)),
            None => Err(ApiError::internal("the request task stopped")),
        };
    }
    // Wait for the first event so that refusals (402, 503...) are HTTP errors.
    let first = rx
        .recv()
        .await
        .ok_or_else(|| ApiError::internal("the request task stopped"))?;
    if let (_, Event::Done(done)) = &first {
        if let Err(e) = done.as_ref() {
            return Err(e.clone());
        }
    }
    let gw2 = gw.clone();
    let include_usage = parsed.include_usage;
    let tail = shape.clone();
    let mut choices: Vec<ChoiceStream> = (0..parsed.n).map(|_| shape.choice_stream()).collect();
    let events = futures_util::stream::once(async move { first })
        .chain(ReceiverStream::new(rx))
        .flat_map(move |(i, ev)| {
            let out = match choices.get_mut(i) {
                Some(c) => shape.sse(&gw2, c, i, ev),
                None => Vec::new(),
            };
            futures_util::stream::iter(out)
        })
        .chain(
            futures_util::stream::once(async move {
                futures_util::stream::iter(tail.end(include_usage))
            })
            .flatten(),
        )
        .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One streamed choice: how its text splits, and the log-probability
/// records it carried so far.
struct ChoiceStream {
    split: stream::Splitter,
    /// Records received with text not shown yet (held back).
    held: Vec<TokenLogprob>,
    /// Records sent, and the bytes of their tokens (where the next one's
    /// `text_offset` starts).
    sent: usize,
    sent_bytes: usize,
}

/// What every chunk of one answer shares.
#[derive(Clone)]
struct Shape {
    chat: bool,
    model: String,
    model_id: Hash,
    id: String,
    created: u64,
    /// Functions the answer may call (when the tool constraint shapes it).
    tools: Option<tools::Tools>,
    /// Prompt and completion tokens of the choices answered so far.
    usage: Arc<std::sync::Mutex<Option<(u32, u32)>>>,
}

impl Shape {
    /// The calls an answer makes, if it is calls (never for a rejected
    /// answer), read from its content.
    fn calls(&self, a: &Answer) -> Option<Vec<(String, String)>> {
        let t = self
            .tools
            .as_ref()
            .filter(|_| a.status != Status::Rejected)?;
        t.calls(self.parts(a).1)
    }

    /// `(reasoning, content)` of an answer (chat only: completions show
    /// the text as it is).
    fn parts<'a>(&self, a: &'a Answer) -> (Option<&'a str>, &'a str) {
        let text = a.result.output_text.as_str();
        if self.chat {
            stream::split_reasoning(text)
        } else {
            (None, text)
        }
    }

    /// A streamed choice, at its start.
    fn choice_stream(&self) -> ChoiceStream {
        ChoiceStream {
            split: stream::Splitter::new(self.tools.clone()),
            held: Vec::new(),
            sent: 0,
            sent_bytes: 0,
        }
    }

    /// The id tool calls of choice `index` derive from: the completion's
    /// own for the first choice, one per choice after it.
    fn call_id(&self, index: usize) -> String {
        match index {
            0 => self.id.clone(),
            i => format!("{}-{i}", self.id),
        }
    }

    fn info(&self, a: &Answer) -> VerinferInfo {
        VerinferInfo {
            receipt_id: a.settled.map(|(id, _)| id),
            status: a.status,
            log_index: a.settled.map(|(_, i)| i),
            model_id: self.model_id,
            receipt_url: a.settled.map(|(id, _)| format!("/v1/receipts/{id}")),
            node: a.result.node,
            verifiers: a.verifiers.clone(),
            reason: a.reason.clone(),
            status_url: (a.status == Status::Pending)
                .then(|| format!("/v1/answers/{}", a.result.request)),
        }
    }

    /// OpenAI's usage: the prompt counted once, the completions of every
    /// choice summed.
    fn usage_json(prompt: u32, completion: u32) -> Value {
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    /// The choice's log-probabilities in the endpoint's format, from the
    /// record `from` on (its token's text at `offset`).
    fn logprobs(&self, a: &Answer, from: usize, offset: usize) -> Value {
        let entries = match a.status {
            Status::Rejected => None,
            _ => a
                .result
                .logprobs
                .as_deref()
                .map(|e| e.get(from..).unwrap_or_default()),
        };
        self.format_logprobs(entries, offset)
    }

    fn format_logprobs(&self, entries: Option<&[TokenLogprob]>, offset: usize) -> Value {
        if self.chat {
            openai::chat_logprobs(entries)
        } else {
            openai::completion_logprobs(entries, offset)
        }
    }

    /// The whole answer as one JSON response.
    fn whole(&self, answers: &[Answer]) -> Response {
        let many = answers.len() > 1;
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let (reasoning, text) = if a.status == Status::Rejected {
                    (None, "")
                } else {
                    self.parts(a)
                };
                let finish = openai::finish(a.result.finish_reason);
                let mut choice = if let Some(calls) = self.calls(a) {
                    let calls = tools::tool_calls(&self.call_id(i), &calls);
                    json!({"index": i, "message": {"role": "assistant", "content": null, "tool_calls": calls, "refusal": null}, "logprobs": self.logprobs(a, 0, 0), "finish_reason": "tool_calls"})
                } else if self.chat {
                    json!({"index": i, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": self.logprobs(a, 0, 0), "finish_reason": finish})
                } else {
                    json!({"index": i, "text": text, "logprobs": self.logprobs(a, 0, 0), "finish_reason": finish})
                };
                if let Some(r) = reasoning {
                    choice["message"]["reasoning_content"] = json!(r);
                }
                if many {
                    // Each choice is its own Request, Result and receipt.
                    choice["verinfer"] = serde_json::to_value(self.info(a)).unwrap_or(Value::Null);
                }
                choice
            })
            .collect();
        let Some(first) = answers.first() else {
            return ApiError::internal("no choice was answered").into_response();
        };
        let completion = answers
            .iter()
            .map(|a| a.result.usage.completion_tokens)
            .sum();
        let body = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": first.result.engine,
            "choices": choices,
            "usage": Self::usage_json(first.result.usage.prompt_tokens, completion),
            "verinfer": self.info(first),
        });
        let mut r = Json(body).into_response();
        decorate(r.headers_mut(), first);
        r
    }

    fn chunk(
        &self,
        index: usize,
        content: Option<&str>,
        finish: Option<&str>,
        extra: Option<(&str, Value)>,
    ) -> Value {
        let choice = if self.chat {
            let delta = match content {
                Some(c) => json!({"role": "assistant", "content": c}),
                None => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": index, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish})
        };
        let mut c = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let (Some((k, v)), Some(obj)) = (extra, c.as_object_mut()) {
            obj.insert(k.to_string(), v);
        }
        c
    }

    /// The chunk of one part of a streamed chat answer.
    fn delta_chunk(&self, index: usize, d: stream::Delta) -> Value {
        let delta = match d {
            stream::Delta::Content(c) => json!({"role": "assistant", "content": c}),
            stream::Delta::Reasoning(r) => {
                json!({"role": "assistant", "reasoning_content": r})
            }
            // OpenAI's stream of calls: each call's index, id and name
            // first, then its arguments in pieces.
            stream::Delta::CallStart { index: call, name } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": call,
                    "id": tools::call_id(&self.call_id(index), call),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }],
            }),
            stream::Delta::CallArgs { index: call, args } => json!({
                "tool_calls": [{"index": call, "function": {"arguments": args}}],
            }),
        };
        let mut c = self.chunk(index, None, None, None);
        c["choices"][0]["delta"] = delta;
        c
    }

    /// The server-sent events of one flow event of choice `index`, whose
    /// stream `split` reads.
    fn sse(
        &self,
        gw: &Gateway,
        choice: &mut ChoiceStream,
        index: usize,
        ev: Event,
    ) -> Vec<SseEvent> {
        let data = |v: Value| SseEvent::default().data(v.to_string());
        match ev {
            Event::Text(t, logprobs) => {
                let mut chunks: Vec<Value> = if self.chat {
                    choice
                        .split
                        .push(&t)
                        .into_iter()
                        .map(|d| self.delta_chunk(index, d))
                        .collect()
                } else {
                    vec![self.chunk(index, Some(&t), None, None)]
                };
                // A chunk carries the records of the tokens whose text it
                // shows (held with the text the splitter holds).
                choice.held.extend(logprobs);
                if let (Some(first), false) = (chunks.first_mut(), choice.held.is_empty()) {
                    let held = std::mem::take(&mut choice.held);
                    first["choices"][0]["logprobs"] =
                        self.format_logprobs(Some(&held), choice.sent_bytes);
                    choice.sent += held.len();
                    choice.sent_bytes += held.iter().map(|e| e.bytes.0.len()).sum::<usize>();
                }
                chunks.into_iter().map(data).collect()
            }
            Event::Retract { reason } => {
                // The answer starts again from nothing.
                *choice = self.choice_stream();
                vec![data(self.chunk(
                    index,
                    Some(""),
                    None,
                    Some((
                        "verinfer",
                        json!({"status": "rejected", "retracted": true, "reason": reason}),
                    )),
                ))]
            }
            Event::Done(done) => match *done {
                Ok(a) => {
                    if let Ok(mut u) = self.usage.lock() {
                        let (p, c) = u.unwrap_or((a.result.usage.prompt_tokens, 0));
                        *u = Some((p, c + a.result.usage.completion_tokens));
                    }
                    let mut out: Vec<SseEvent> = choice
                        .split
                        .finish()
                        .into_iter()
                        .map(|d| data(self.delta_chunk(index, d)))
                        .collect();
                    let finish = if self.calls(&a).is_some() {
                        "tool_calls"
                    } else {
                        openai::finish(a.result.finish_reason)
                    };
                    let info = serde_json::to_value(self.info(&a)).unwrap_or(Value::Null);
                    // The records not sent yet come with the last chunk.
                    let mut c = self.chunk(index, None, Some(finish), Some(("verinfer", info)));
                    c["choices"][0]["logprobs"] = self.logprobs(&a, choice.sent, choice.sent_bytes);
                    out.push(data(c));
                    out
                }
                Err(e) => {
                    Counters::inc(&gw.counters.errors);
                    vec![data(e.body())]
                }
            },
        }
    }

    /// The events after every choice ended: the usage chunk when asked, and
    /// `[DONE]`.
    fn end(&self, include_usage: bool) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let usage = self.usage.lock().ok().and_then(|u| *u);
        if let (true, Some((p, c))) = (include_usage, usage) {
            let mut u = self.chunk(0, None, None, Some(("usage", Self::usage_json(p, c))));
            u["choices"] = json!([]);
            out.push(SseEvent::default().data(u.to_string()));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

fn decorate(h: &mut HeaderMap, a: &Answer) {
    if let Some((id, _)) = a.settled {
        if let Ok(v) = HeaderValue::from_str(&id.to_hex()) {
            h.insert("x-verinfer-receipt", v);
        }
    }
    let status = match a.status {
        Status::Verified => "verified",
        Status::Provisional => "provisional",
        Status::Rejected => "rejected",
        Status::Pending => "pending",
    };
    h.insert("x-verinfer-status", HeaderValue::from_static(status));
}

async fn models(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
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
                    "inference_nodes": gw.directory.live(Role::Inference, &m.id).len(),
                    "verifiers": gw.directory.live(Role::Verifier, &m.id).len(),
                }
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn receipt(
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
async fn answer_status(
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

async fn summary(State(gw): State<Arc<Gateway>>) -> Result<Json<SummaryView>, ApiError> {
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

async fn network(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
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

async fn metrics_text(State(gw): State<Arc<Gateway>>) -> Response {
    let c = gw.counters.snapshot();
    let mut out = String::new();
    metrics::family(
        &mut out,
        "requests_total",
        "counter",
        "API requests received.",
        &[("", c.requests)],
    );
    metrics::family(
        &mut out,
        "answers_total",
        "counter",
        "Answers by verification status.",
        &[
            ("status=\"verified\"", c.verified),
            ("status=\"provisional\"", c.provisional),
            ("status=\"rejected\"", c.rejected),
        ],
    );
    metrics::family(
        &mut out,
        "errors_total",
        "counter",
        "Requests answered with an error.",
        &[("", c.errors)],
    );
    metrics::family(
        &mut out,
        "slashes_total",
        "counter",
        "Slashes submitted.",
        &[("", c.slashes)],
    );
    metrics::family(
        &mut out,
        "retries_total",
        "counter",
        "Requests retried on another inference node.",
        &[("", c.retries)],
    );
    metrics::family(
        &mut out,
        "verdicts_total",
        "counter",
        "Verdicts received.",
        &[("", c.verdicts)],
    );
    metrics::family(
        &mut out,
        "tokens_total",
        "counter",
        "Tokens of settled answers.",
        &[
            ("kind=\"prompt\"", c.prompt_tokens),
            ("kind=\"completion\"", c.completion_tokens),
        ],
    );
    let members = gw.directory.members();
    let count = |role: Role, live: bool| {
        members
            .iter()
            .filter(|m| m.view.role == role && gw.directory.is_live(m) == live)
            .count() as u64
    };
    metrics::family(
        &mut out,
        "nodes",
        "gauge",
        "Registered nodes by role and liveness.",
        &[
            (
                "role=\"inference\",live=\"true\"",
                count(Role::Inference, true),
            ),
            (
                "role=\"inference\",live=\"false\"",
                count(Role::Inference, false),
            ),
            (
                "role=\"verifier\",live=\"true\"",
                count(Role::Verifier, true),
            ),
            (
                "role=\"verifier\",live=\"false\"",
                count(Role::Verifier, false),
            ),
        ],
    );
    if let Some(p) = gw.directory.params() {
        metrics::family(
            &mut out,
            "ledger_height",
            "gauge",
            "Transactions applied by the ledger.",
            &[("", p.height)],
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// `/log/...` and `/v1/explorer/...`: the ledger's log and explorer API,
/// for the allowed paths only ([`guard::proxy_target`]), checked on the raw
/// request target before anything is forwarded.
async fn proxy(State(gw): State<Arc<Gateway>>, uri: Uri) -> Response {
    match guard::proxy_target(uri.path(), uri.query()) {
        Ok(Some(target)) => pass_through(&gw, &target)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Ok(None) => ApiError::not_found("no such endpoint").into_response(),
        Err(e) => e.into_response(),
    }
}

/// GETs `path` from the ledger role and answers with its status, type and body.
async fn pass_through(gw: &Gateway, path: &str) -> Result<Response, HttpError> {
    let resp = gw
        .peer
        .http()
        .get(format!("{}{path}", gw.ledger.base))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| HttpError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in [header::CONTENT_TYPE, header::CACHE_CONTROL] {
        if let Some(v) = resp
            .headers()
            .get(name.as_str())
            .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        {
            headers.insert(name, v);
        }
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| HttpError(StatusCode::BAD_GATEWAY, e.to_string()))?;
    Ok((status, headers, bytes).into_response())
}

/// `/v1/devnet`: the demo key, to the chat page of someone at this machine
/// only (whoever reaches the gateway from elsewhere gets a 403).
async fn devnet_info(
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

async fn info(State(gw): State<Arc<Gateway>>) -> Json<NodeInfo> {
    Json(NodeInfo {
        key: gw.peer.key().public(),
        role: "gateway".into(),
        models: Vec::new(),
        engine: String::new(),
        context_len: 0,
        vocab_size: 0,
    })
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::connect_info::MockConnectInfo;

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

    /// Regression: the gateway answered an oversized body with a 413 and then
    /// closed the connection without saying so; the client's next request on
    /// it failed with a broken pipe.
    #[tokio::test]
    async fn an_oversized_body_is_refused_with_connection_close() {
        let config = GatewayConfig {
            api_keys: vec![(
                crate::config::api_key_hash("vi-test"),
                SecretKey::generate(),
            )],
            max_body_bytes: 1 << 10,
            ..Default::default()
        };
        // No ledger: the body is refused before the gateway needs one.
        let gw = Gateway::start(SecretKey::generate(), "http://127.0.0.1:9", config)
            .await
            .expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, gw.router()).await });
        let http = reqwest::Client::new();
        let send = |body: String| {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth("vi-test")
                .header(header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
        };

        let big = send(format!("{{\"model\": \"{}\"}}", "x".repeat(1 << 20)))
            .await
            .expect("oversized request");
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            big.headers().get(header::CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        // The next request goes out on a fresh connection and is answered.
        let next = send("{}".into()).await.expect("request after a 413");
        assert_eq!(next.status(), StatusCode::BAD_REQUEST);
        assert_eq!(next.headers().get(header::CONNECTION), None);
    }
}
