//! Authenticated messages between nodes.
//!
//! Records inside messages carry their own signatures (Results, Verdicts,
//! transactions); the envelope authenticates the HTTP message itself, so a
//! node knows which node sent it and that it is not a replay. The sender signs
//!
//! ```text
//! verinfer-http-v1\n METHOD\n PATH?QUERY\n UNIX_MS\n NONCE\n hex(SHA-256(body))
//! ```
//!
//! (newline-separated, no spaces) with its node key, and sends the key, time,
//! nonce and signature in `x-verinfer-*` headers. The receiver accepts a
//! message only within [`MAX_SKEW_MS`] of its own clock and only once: it
//! remembers the nonces it saw for twice that window.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use verinfer_types::{Hash, PublicKey, SecretKey, Signature};

/// Header naming the sender's public key (hex).
pub const KEY: &str = "x-verinfer-key";
/// Header with the sender's clock, Unix milliseconds.
pub const TIME: &str = "x-verinfer-time";
/// Header with 16 random bytes (hex), unique per message.
pub const NONCE: &str = "x-verinfer-nonce";
/// Header with the Ed25519 signature (hex).
pub const SIGNATURE: &str = "x-verinfer-signature";
/// Largest accepted difference between the sender's and receiver's clocks.
pub const MAX_SKEW_MS: u64 = 60_000;

const DOMAIN: &str = "verinfer-http-v1";

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// A header is missing or malformed.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The sender's clock is too far from ours.
    #[error("message time is {0} ms away from this node's clock")]
    Skew(u64),
    /// The signature does not verify.
    #[error("message signature does not verify")]
    Signature,
    /// The nonce was seen before.
    #[error("message replayed")]
    Replay,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn message(method: &str, path: &str, time: u64, nonce: &str, body: &[u8]) -> Vec<u8> {
    format!(
        "{DOMAIN}\n{method}\n{path}\n{time}\n{nonce}\n{}",
        Hash::of(body).to_hex()
    )
    .into_bytes()
}

/// The headers that authenticate `body` sent by `key` as `METHOD path`.
pub fn sign(key: &SecretKey, method: &str, path_and_query: &str, body: &[u8]) -> HeaderMap {
    let time = now_ms();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let sig = key.sign(&message(method, path_and_query, time, &nonce, body));
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put(KEY, key.public().to_hex());
    put(TIME, time.to_string());
    put(NONCE, nonce);
    put(SIGNATURE, sig.to_hex());
    h
}

/// Checks signed messages and remembers their nonces.
#[derive(Default)]
pub struct Gate {
    seen: Mutex<HashMap<(PublicKey, String), u64>>,
}

impl Gate {
    /// A gate with an empty replay cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The sender of an authentic, fresh message; refuses forgeries and replays.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<PublicKey, AuthError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthError::Header(name))
        };
        let key: PublicKey = get(KEY)?.parse().map_err(|_| AuthError::Header(KEY))?;
        let time: u64 = get(TIME)?.parse().map_err(|_| AuthError::Header(TIME))?;
        let nonce = get(NONCE)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Header(NONCE));
        }
        let sig: Signature = get(SIGNATURE)?
            .parse()
            .map_err(|_| AuthError::Header(SIGNATURE))?;
        let now = now_ms();
        let skew = now.abs_diff(time);
        if skew > MAX_SKEW_MS {
            return Err(AuthError::Skew(skew));
        }
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        key.verify(&message(method.as_str(), path, time, nonce, body), &sig)
            .map_err(|_| AuthError::Signature)?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, t| now.saturating_sub(*t) <= 2 * MAX_SKEW_MS);
        }
        if seen.insert((key, nonce.to_string()), now).is_some() {
            return Err(AuthError::Replay);
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    #[test]
    fn accepts_once_and_refuses_replay_and_tampering() {
        let k = key();
        let h = sign(&k, "POST", "/verifier/check?x=1", b"body");
        let gate = Gate::new();
        let uri: Uri = "/verifier/check?x=1".parse().unwrap();
        assert_eq!(gate.check(&Method::POST, &uri, &h, b"body"), Ok(k.public()));
        assert_eq!(
            gate.check(&Method::POST, &uri, &h, b"body"),
            Err(AuthError::Replay)
        );
        let h = sign(&k, "POST", "/verifier/check?x=1", b"body");
        assert_eq!(
            gate.check(&Method::POST, &uri, &h, b"bodY"),
            Err(AuthError::Signature)
        );
        let other: Uri = "/verifier/check?x=2".parse().unwrap();
        assert_eq!(
            gate.check(&Method::POST, &other, &h, b"body"),
            Err(AuthError::Signature)
        );
        assert_eq!(
            gate.check(&Method::GET, &uri, &h, b"body"),
            Err(AuthError::Signature)
        );
    }

    #[test]
    fn refuses_stale_messages() {
        let k = key();
        let time = now_ms() - 2 * MAX_SKEW_MS;
        let nonce = "00".repeat(16);
        let sig = k.sign(&message("POST", "/a", time, &nonce, b""));
        let mut h = HeaderMap::new();
        h.insert(KEY, k.public().to_hex().parse().unwrap());
        h.insert(TIME, time.to_string().parse().unwrap());
        h.insert(NONCE, nonce.parse().unwrap());
        h.insert(SIGNATURE, sig.to_hex().parse().unwrap());
        let r = Gate::new().check(&Method::POST, &"/a".parse().unwrap(), &h, b"");
        assert!(matches!(r, Err(AuthError::Skew(_))));
    }
}
