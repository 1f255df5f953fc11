//! The OpenAI completion endpoints: `/v1/chat/completions` and
//! `/v1/completions`, from the API key to the first event (refusals before
//! it are HTTP errors), one Request per choice.

use super::counters::Counters;
use super::flow::{self, Answer, Event};
use super::openai::{self, ApiError};
use super::state::Gateway;
use super::streaming::Shape;
use super::{guard, tools};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(gw, headers, body, true).await
}

pub(super) async fn completions(
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
        tools: parsed.tools.clone().filter(tools::Tools::callable),
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
    let events = futures_util::stream::once(async move { first })
        .chain(ReceiverStream::new(rx))
        .flat_map(move |(i, ev)| futures_util::stream::iter(shape.sse(&gw2, i, ev)))
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
    use verinfer_types::SecretKey;

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
        let gw = Gateway::start(SecretKey::generate(), "http://127.0.0.1:9", config).await;
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
