//! Reading a request body within the gateway's limit.
//!
//! A body must arrive within [`BODY_TIME`], so a client cannot hold a
//! connection with a body that never comes. A body over the limit is
//! refused, but the rest of it is still read and dropped (up to
//! [`DRAIN_BYTES`] more) before the refusal is sent: a server that answers
//! and closes while the client is still writing resets the connection, and
//! the client sees a broken pipe instead of the 413 that says what was wrong
//! (web servers call this a lingering close). Reading costs the gateway no
//! more than the client spends sending, and a body declared larger than the
//! drain bound is refused without reading any of it.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use futures_util::StreamExt;
use std::time::Duration;

/// How many bytes past the limit are read and dropped before a refusal.
pub(super) const DRAIN_BYTES: usize = 16 << 20;
/// How long a body may take to arrive, oversized or not.
pub(super) const BODY_TIME: Duration = Duration::from_secs(30);

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum BodyError {
    /// Larger than the limit; `drained` when it was nevertheless read to its
    /// end, so the connection can carry the next request.
    TooLarge { drained: bool },
    /// Not all there within [`BODY_TIME`].
    Slow,
    /// The client broke off or sent a malformed body.
    Broken(String),
}

/// The whole body if it is at most `limit` bytes and arrives within `time`
/// ([`BODY_TIME`] on the gateway).
pub(super) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    time: Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit.saturating_add(DRAIN_BYTES)) {
        return Err(BodyError::TooLarge { drained: false });
    }
    tokio::time::timeout(time, collect(body, declared, limit))
        .await
        .unwrap_or(Err(BodyError::Slow))
}

async fn collect(body: Body, declared: Option<usize>, limit: usize) -> Result<Bytes, BodyError> {
    let mut data = body.into_data_stream();
    let mut kept = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(chunk) = data.next().await {
        let chunk =
            chunk.map_err(|e| BodyError::Broken(format!("the request body broke off: {e}")))?;
        if kept.len() + chunk.len() > limit {
            let drained = drain(&mut data, kept.len() + chunk.len(), limit).await;
            return Err(BodyError::TooLarge { drained });
        }
        kept.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(kept))
}

/// Reads and drops the rest of a body of which `seen` bytes were read;
/// whether it ended within the drain bound.
async fn drain(
    data: &mut (impl futures_util::Stream<Item = Result<Bytes, axum::Error>> + Unpin),
    mut seen: usize,
    limit: usize,
) -> bool {
    let bound = limit.saturating_add(DRAIN_BYTES);
    while seen <= bound {
        match data.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            Some(Err(_)) => return false,
            None => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(length: Option<usize>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(n) = length {
            h.insert(header::CONTENT_LENGTH, n.into());
        }
        h
    }

    fn chunked(parts: Vec<Vec<u8>>) -> Body {
        Body::from_stream(futures_util::stream::iter(
            parts.into_iter().map(Ok::<_, std::io::Error>),
        ))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole() {
        let body = chunked(vec![b"ab".to_vec(), b"cd".to_vec()]);
        assert_eq!(
            read(&headers(None), body, 4, BODY_TIME).await,
            Ok(Bytes::from("abcd"))
        );
    }

    #[tokio::test]
    async fn an_oversized_body_is_refused_after_reading_it_to_its_end() {
        let body = chunked(vec![vec![0; 3], vec![0; 3], vec![0; 3]]);
        assert_eq!(
            read(&headers(None), body, 4, BODY_TIME).await,
            Err(BodyError::TooLarge { drained: true })
        );
    }

    #[tokio::test]
    async fn a_body_past_the_drain_bound_is_refused_unread() {
        let body = chunked(vec![vec![0; 8]; 3]);
        assert_eq!(
            read(&headers(Some(4 + DRAIN_BYTES + 1)), body, 4, BODY_TIME).await,
            Err(BodyError::TooLarge { drained: false })
        );
        let endless = Body::from_stream(futures_util::stream::repeat_with(|| {
            Ok::<_, std::io::Error>(vec![0u8; 1 << 20])
        }));
        assert_eq!(
            read(&headers(None), endless, 4, BODY_TIME).await,
            Err(BodyError::TooLarge { drained: false })
        );
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_in_time_is_refused() {
        let never =
            Body::from_stream(futures_util::stream::pending::<Result<Bytes, std::io::Error>>());
        let time = Duration::from_millis(50);
        assert_eq!(
            read(&headers(Some(2)), never, 4, time).await,
            Err(BodyError::Slow)
        );
    }

    #[tokio::test]
    async fn a_broken_body_is_named() {
        let body = Body::from_stream(futures_util::stream::iter([
            Ok(vec![0u8; 2]),
            Err(std::io::Error::other("reset")),
        ]));
        assert!(matches!(
            read(&headers(None), body, 4, BODY_TIME).await,
            Err(BodyError::Broken(m)) if m.contains("reset")
        ));
    }
}
