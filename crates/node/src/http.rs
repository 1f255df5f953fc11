//! What every role's HTTP server shares: binding, JSON errors, the
//! authentication gate and the caller's authorization as a request check,
//! and [`Signed`], the extractor of a signed message's body.

use crate::auth::Gate;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use verinfer_types::{Hash, PublicKey};

/// A JSON error `{"error": message}` with a status.
#[derive(Debug)]
pub struct HttpError(pub StatusCode, pub String);

impl HttpError {
    /// 400 with `msg`.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::BAD_REQUEST, msg.into())
    }
    /// 500 with `msg`.
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        HttpError(StatusCode::INTERNAL_SERVER_ERROR, msg.to_string())
    }
    /// 404 with `msg`.
    pub fn not_found(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::NOT_FOUND, msg.into())
    }
    /// 404 naming `model`: a node asked for a model it does not run (one
    /// of `served`).
    pub fn model_not_served<'a>(model: &Hash, served: impl Iterator<Item = &'a Hash>) -> Self {
        let served: Vec<String> = served.map(Hash::to_string).collect();
        HttpError::not_found(format!(
            "model: this node does not serve model {model} (it serves {})",
            served.join(", ")
        ))
    }
    /// 403 with `msg`: an authentic caller this role does not serve.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::FORBIDDEN, msg.into())
    }
    /// 422 with `e`: a well-formed request the rules refuse.
    pub fn unprocessable(e: impl std::fmt::Display) -> Self {
        HttpError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
    /// 429 with `msg` (answered with `Retry-After`): the work queue is full.
    pub fn busy(msg: impl Into<String>) -> Self {
        HttpError(StatusCode::TOO_MANY_REQUESTS, msg.into())
    }
}

/// Seconds a caller refused with 429 or 503 waits before it tries again
/// (one value for the node's errors and the gateway's OpenAI errors).
pub use verinfer_openai::RETRY_AFTER_SECS;

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.1 }));
        // Busy or short of a peer for now: the caller is told when to retry.
        if matches!(
            self.0,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            let retry = [(
                axum::http::header::RETRY_AFTER,
                RETRY_AFTER_SECS.to_string(),
            )];
            return (self.0, retry, body).into_response();
        }
        (self.0, body).into_response()
    }
}

/// Checks that a request is an authentic, fresh signed message addressed to
/// this node from a sender `allowed` accepts (401 for a bad envelope, or
/// `allowed`'s refusal, typically 403). The nonce is remembered only once
/// the sender is allowed, so outsiders cannot fill the replay cache.
pub async fn authorize<F, Fut>(
    gate: &Gate,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    allowed: F,
) -> Result<PublicKey, HttpError>
where
    F: FnOnce(PublicKey) -> Fut,
    Fut: Future<Output = Result<(), HttpError>>,
{
    let unauthorized =
        |e: crate::auth::AuthError| HttpError(StatusCode::UNAUTHORIZED, e.to_string());
    let m = gate
        .verify(method, uri, headers, body)
        .map_err(unauthorized)?;
    allowed(m.key).await?;
    gate.admit(&m).map_err(unauthorized)
}

/// Who a role takes signed messages with a `T` body from, and what the body
/// is called in its errors: the policy [`Signed`] applies.
pub trait Admits<T>: Send + Sync + 'static {
    /// Names the body in a 400 (`"{WHAT}: {serde error}"`).
    const WHAT: &'static str;
    /// The gate that checks envelopes addressed to this node.
    fn gate(&self) -> &Gate;
    /// Ok when `sender` may send this message (typically a 403 otherwise).
    fn admit(&self, sender: PublicKey) -> impl Future<Output = Result<(), HttpError>> + Send;
}

/// A signed message's JSON body, from an authentic, fresh envelope whose
/// sender the role admits ([`authorize`] with [`Admits::admit`]), parsed
/// only then: 401 for a bad envelope, the role's refusal of the sender,
/// 400 naming the body for bad JSON; a body axum cannot read keeps axum's
/// answer (413 when too large).
#[derive(Debug)]
pub struct Signed<T> {
    /// The authenticated sender.
    pub sender: PublicKey,
    /// The parsed body.
    pub body: T,
}

impl<N, T> FromRequest<Arc<N>> for Signed<T>
where
    N: Admits<T>,
    T: DeserializeOwned,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<N>) -> Result<Self, Response> {
        let (method, uri, headers) = (
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
        );
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let node = &**state;
        let sender = authorize(node.gate(), &method, &uri, &headers, &bytes, |k| {
            node.admit(k)
        })
        .await
        .map_err(IntoResponse::into_response)?;
        let body = serde_json::from_slice(&bytes)
            .map_err(|e| HttpError::bad_request(format!("{}: {e}", N::WHAT)).into_response())?;
        Ok(Signed { sender, body })
    }
}

/// A bound on the work a role takes at once (waiting and running): a
/// caller beyond it is refused with 429 and `Retry-After` rather than
/// queued without end.
pub struct Queue {
    held: Arc<AtomicUsize>,
    limit: usize,
    what: &'static str,
}

/// A place in a [`Queue`], given back when dropped.
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queue {
    /// A queue of at most `limit` jobs; `what` names it in refusals.
    pub fn new(limit: usize, what: &'static str) -> Self {
        Queue {
            held: Arc::default(),
            limit,
            what,
        }
    }

    /// A place, or 429 when all `limit` are taken.
    pub fn enter(&self) -> Result<Ticket, HttpError> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map(|_| Ticket(self.held.clone()))
            .map_err(|n| {
                HttpError::busy(format!(
                    "{} is full ({n} jobs): try again in {RETRY_AFTER_SECS} s or elsewhere",
                    self.what
                ))
            })
    }
}

/// Binds `addr` (port 0 picks a free one) and returns the listener and its
/// base URL.
pub async fn bind(addr: &str) -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local: SocketAddr = listener.local_addr()?;
    Ok((listener, format!("http://{local}")))
}

/// Runs blocking work off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(HttpError::internal)
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_answers_429_with_retry_after() {
        let q = Queue::new(2, "the test queue");
        let (a, _b) = (q.enter().unwrap(), q.enter().unwrap());
        let refused = q.enter().expect_err("third place refused");
        let resp = refused.into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            resp.headers().get(axum::http::header::RETRY_AFTER).unwrap(),
            &RETRY_AFTER_SECS.to_string()
        );
        drop(a);
        assert!(q.enter().is_ok(), "a place given back is taken again");
    }

    #[test]
    fn unavailable_answers_carry_retry_after() {
        let role = HttpError(StatusCode::SERVICE_UNAVAILABLE, "no verifier".into()).into_response();
        let gateway =
            crate::roles::gateway::openai::ApiError::unavailable("the ledger is unavailable")
                .into_response();
        for resp in [role, gateway] {
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                resp.headers().get(axum::http::header::RETRY_AFTER).unwrap(),
                &RETRY_AFTER_SECS.to_string()
            );
        }
    }

    /// The extractor answers as each handler's own lines did: 401 for an
    /// envelope that does not verify, the role's refusal for a sender it
    /// does not take, 400 naming the body for bad JSON, else the body.
    #[tokio::test]
    async fn signed_bodies_are_authenticated_then_admitted_then_parsed() {
        struct Node {
            gate: Gate,
            allowed: PublicKey,
        }
        impl Admits<u64> for Node {
            const WHAT: &'static str = "number";
            fn gate(&self) -> &Gate {
                &self.gate
            }
            fn admit(
                &self,
                sender: PublicKey,
            ) -> impl Future<Output = Result<(), HttpError>> + Send {
                std::future::ready(if sender == self.allowed {
                    Ok(())
                } else {
                    Err(HttpError::forbidden("not a sender of this node"))
                })
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let me = verinfer_types::SecretKey::generate();
        let (friend, stranger) = (
            verinfer_types::SecretKey::generate(),
            verinfer_types::SecretKey::generate(),
        );
        let node = Arc::new(Node {
            gate: Gate::open(me.public(), dir.path()).expect("gate"),
            allowed: friend.public(),
        });
        let request = |key: &verinfer_types::SecretKey, signed: &str, sent: &str| {
            let mut r = Request::new(axum::body::Body::from(sent.to_string()));
            *r.method_mut() = Method::POST;
            *r.uri_mut() = Uri::from_static("/n");
            *r.headers_mut() =
                crate::auth::sign(key, &me.public(), "POST", "/n", signed.as_bytes());
            r
        };
        let extract = |r| async {
            match Signed::<u64>::from_request(r, &node).await {
                Ok(s) => Ok((s.sender, s.body)),
                Err(resp) => {
                    let status = resp.status();
                    let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
                        .await
                        .expect("body");
                    Err((status, String::from_utf8_lossy(&body).into_owned()))
                }
            }
        };
        assert_eq!(
            extract(request(&friend, "7", "7")).await,
            Ok((friend.public(), 7))
        );
        let code = |r: Result<(PublicKey, u64), (StatusCode, String)>| r.map_err(|e| e.0);
        assert_eq!(
            code(extract(request(&friend, "7", "8")).await),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            code(extract(request(&stranger, "7", "7")).await),
            Err(StatusCode::FORBIDDEN)
        );
        let bad = extract(request(&friend, "x", "x")).await;
        assert!(
            matches!(&bad, Err((StatusCode::BAD_REQUEST, m)) if m.contains("number: ")),
            "{bad:?}"
        );
    }
}
