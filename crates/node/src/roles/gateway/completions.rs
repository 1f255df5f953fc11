//! The OpenAI completion endpoints: `/v1/chat/completions` and
//! `/v1/completions`, from the API key to the first event (refusals before
//! it are HTTP errors), one Request per choice.

use super::body::{self, BodyError};
use super::counters::Counters;
use super::flow::{self, Answer, Event};
use super::guard;
use super::openai::{self, ApiError};
use super::state::{Account, Gateway};
use super::streaming::{ChoiceStream, Shape};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use verinfer_types::records::Policy;

pub(super) async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw, headers, body, true).await
}

pub(super) async fn completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(gw, headers, body, false).await
}

async fn handle(gw: Arc<Gateway>, headers: HeaderMap, body: Body, chat: bool) -> Response {
    Counters::inc(&gw.counters.requests);
    let mut reusable = false;
    let result = async {
        // Who asks, and whether they may now, before a byte of the body is
        // read: a stranger's body is not worth reading.
        let (api_key, account) = gw.account(&headers)?;
        gw.limiter.take(&api_key).map_err(ApiError::rate_limited)?;
        let read = body::read(&headers, body, gw.config.max_body_bytes, body::BODY_TIME).await;
        reusable = matches!(read, Ok(_) | Err(BodyError::TooLarge { drained: true }));
        let body = read.map_err(|e| refusal(&gw, e))?;
        start(&gw, &account, &body, chat).await
    }
    .await;
    let mut response = result.unwrap_or_else(|e| {
        Counters::inc(&gw.counters.errors);
        e.into_response()
    });
    // A body not read to its end leaves the connection unusable, so the
    // server closes it after answering; saying so keeps a client from
    // sending its next request into the closed connection.
    if !reusable {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The client's error for a body that was not taken.
fn refusal(gw: &Gateway, e: BodyError) -> ApiError {
    match e {
        BodyError::TooLarge { .. } => ApiError::too_large(
            None,
            format!(
                "the request body is larger than {} bytes",
                gw.config.max_body_bytes
            ),
        ),
        BodyError::Slow => ApiError::timeout(format!(
            "the request body did not arrive within {} s",
            body::BODY_TIME.as_secs()
        )),
        BodyError::Broken(m) => ApiError::bad_request(m),
    }
}

/// Parses and starts serving; errors found before the first event are
/// returned as HTTP errors, later ones inside the stream.
async fn start(
    gw: &Arc<Gateway>,
    account: &Arc<Account>,
    body: &[u8],
    chat: bool,
) -> Result<Response, ApiError> {
    let mut parsed = openai::parse(body, chat)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roles::gateway::GatewayConfig;
    use axum::http::StatusCode;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use verinfer_types::SecretKey;

    /// A gateway with one API key (`vi-test`) and a 1 KiB body limit; its URL.
    /// No ledger: bodies are refused before the gateway needs one.
    async fn gateway() -> String {
        let config = GatewayConfig {
            api_keys: vec![(
                crate::config::api_key_hash("vi-test"),
                SecretKey::generate(),
            )],
            max_body_bytes: 1 << 10,
            ..Default::default()
        };
        let gw = Gateway::start(SecretKey::generate(), "http://127.0.0.1:9", config)
            .await
            .expect("gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, gw.router()).await });
        format!("{addr}")
    }

    fn head(key: &str, length: usize) -> String {
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\n\
             content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        )
    }

    /// The whole reply to a request's head sent without its body: the
    /// gateway must answer (within 10 s) and close.
    async fn reply_to_head(addr: &str, key: &str, length: usize) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
        conn.write_all(head(key, length).as_bytes())
            .await
            .expect("head");
        let mut reply = String::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_string(&mut reply))
            .await
            .expect("answered without the body")
            .expect("reply, then close");
        reply
    }

    /// Regression: the gateway answered a body over its limit as soon as it
    /// had read the limit's worth and closed the connection; a client still
    /// writing the rest got a broken pipe instead of the 413.
    #[tokio::test]
    async fn a_client_still_sending_an_oversized_body_gets_the_413() {
        let addr = gateway().await;
        let body = format!("{{\"model\": \"{}\"}}", "x".repeat(1 << 20));
        let (first, rest) = body.as_bytes().split_at(256 << 10);
        let mut conn = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        conn.write_all(head("vi-test", body.len()).as_bytes())
            .await
            .expect("head");
        conn.write_all(first).await.expect("first part");
        // Long enough for the gateway to have answered and closed, had it not
        // waited for the rest.
        tokio::time::sleep(Duration::from_millis(300)).await;
        conn.write_all(rest).await.expect("the rest of the body");
        let mut reply = vec![0; 4096];
        let n = conn.read(&mut reply).await.expect("reply");
        let reply = String::from_utf8_lossy(&reply[..n]);
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(reply.contains("larger than 1024 bytes"), "{reply}");
    }

    #[tokio::test]
    async fn an_oversized_body_read_to_its_end_leaves_the_connection_usable() {
        let url = format!("http://{}", gateway().await);
        // One connection, so the second request reuses the first's.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
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
        assert_eq!(big.headers().get(header::CONNECTION), None);
        let next = send("{}".into()).await.expect("request after a 413");
        assert_eq!(next.status(), StatusCode::BAD_REQUEST);
    }

    /// A body declared larger than the gateway will read is refused unread,
    /// and the refusal says the connection closes (regression: without it a
    /// client sent its next request into the closed connection).
    #[tokio::test]
    async fn a_body_declared_past_the_drain_bound_is_refused_with_connection_close() {
        let reply = reply_to_head(&gateway().await, "vi-test", 1 << 30).await;
        assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
        assert!(
            reply.to_ascii_lowercase().contains("connection: close"),
            "{reply}"
        );
    }

    /// Regression: the gateway read a body before looking at the key, so a
    /// stranger could hold a connection (and the gateway's memory) with it.
    #[tokio::test]
    async fn a_strangers_body_is_refused_unread() {
        let reply = reply_to_head(&gateway().await, "vi-wrong", 100).await;
        assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    }
}
