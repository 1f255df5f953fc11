//! The envelope of authenticated HTTP messages between nodes: what a sender
//! signs and the check of a received envelope, as pure functions (the
//! receiver's clock and its memory of nonces are the caller's; the node's
//! gate keeps them).
//!
//! Records inside messages carry their own signatures (Results, Verdicts,
//! transactions); the envelope authenticates the HTTP message itself, so a
//! node knows which node sent it, that it was meant for this node, and that
//! it is not a replay. The sender signs
//!
//! ```text
//! verinfer-http-v2\n hex(RECEIVER_KEY)\n METHOD\n PATH?QUERY\n UNIX_MS\n NONCE\n hex(SHA-256(body))
//! ```
//!
//! (newline-separated, no spaces) with its node key, and sends the key, the
//! receiver's key, time, nonce and signature in `x-verinfer-*` headers. The
//! receiver accepts a message only when it names the receiver's own key (a
//! message for one node is worth nothing at another) and only within
//! [`MAX_SKEW_MS`] of its own clock.

use crate::{Hash, PublicKey, SecretKey, Signature};

/// Header naming the sender's public key (hex).
pub const KEY: &str = "x-verinfer-key";
/// Header naming the receiver's public key (hex).
pub const TO: &str = "x-verinfer-to";
/// Header with the sender's clock, Unix milliseconds.
pub const TIME: &str = "x-verinfer-time";
/// Header with 16 random bytes (hex), unique per message.
pub const NONCE: &str = "x-verinfer-nonce";
/// Header with the Ed25519 signature (hex).
pub const SIGNATURE: &str = "x-verinfer-signature";
/// Largest accepted difference between the sender's and receiver's clocks.
pub const MAX_SKEW_MS: u64 = 60_000;

const DOMAIN: &str = "verinfer-http-v2";

/// Why an envelope was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// A header is missing or malformed.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The message names another node as its receiver.
    #[error("message is addressed to node {0}, not to this node")]
    Receiver(String),
    /// The sender's clock is too far from ours.
    #[error("message time is {0} ms away from this node's clock")]
    Skew(u64),
    /// The signature does not verify.
    #[error("message signature does not verify")]
    Signature,
}

/// The bytes a sender signs.
pub fn message(
    to: &PublicKey,
    method: &str,
    path: &str,
    time: u64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "{DOMAIN}\n{}\n{method}\n{path}\n{time}\n{nonce}\n{}",
        to.to_hex(),
        Hash::of(body).to_hex()
    )
    .into_bytes()
}

/// The five headers of a message, parsed but not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The sender.
    pub key: PublicKey,
    /// The receiver the sender named.
    pub to: PublicKey,
    /// The sender's clock, Unix milliseconds.
    pub time: u64,
    /// 32 hex digits, as sent (the signature covers them so).
    pub nonce: String,
    /// The sender's signature over [`message`].
    pub signature: Signature,
}

impl Envelope {
    /// The envelope of `body` sent by `key` to the node `to` as
    /// `METHOD path_and_query` at `time` with `nonce` (32 hex digits).
    pub fn sign(
        key: &SecretKey,
        to: &PublicKey,
        method: &str,
        path_and_query: &str,
        time: u64,
        nonce: &str,
        body: &[u8],
    ) -> Envelope {
        Envelope {
            key: key.public(),
            to: *to,
            time,
            nonce: nonce.to_string(),
            signature: key.sign(&message(to, method, path_and_query, time, nonce, body)),
        }
    }

    /// The headers, as (name, value) pairs.
    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (KEY, self.key.to_hex()),
            (TO, self.to.to_hex()),
            (TIME, self.time.to_string()),
            (NONCE, self.nonce.clone()),
            (SIGNATURE, self.signature.to_hex()),
        ]
    }

    /// Parses the headers `header` returns by name (a header that is absent
    /// or not text is `None`).
    pub fn parse<'a>(
        header: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<Self, EnvelopeError> {
        let get = |name| header(name).ok_or(EnvelopeError::Header(name));
        let key = get(KEY)?.parse().map_err(|_| EnvelopeError::Header(KEY))?;
        let to = get(TO)?.parse().map_err(|_| EnvelopeError::Header(TO))?;
        let time = get(TIME)?
            .parse()
            .map_err(|_| EnvelopeError::Header(TIME))?;
        let nonce = get(NONCE)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(EnvelopeError::Header(NONCE));
        }
        let signature = get(SIGNATURE)?
            .parse()
            .map_err(|_| EnvelopeError::Header(SIGNATURE))?;
        Ok(Envelope {
            key,
            to,
            time,
            nonce: nonce.to_string(),
            signature,
        })
    }

    /// Checks that the envelope is addressed to `me`, within the clock
    /// window of `now_ms`, and signed by its key over this method, path (with
    /// query) and body.
    pub fn verify(
        &self,
        me: &PublicKey,
        now_ms: u64,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(), EnvelopeError> {
        if self.to != *me {
            return Err(EnvelopeError::Receiver(self.to.to_hex()));
        }
        let skew = now_ms.abs_diff(self.time);
        if skew > MAX_SKEW_MS {
            return Err(EnvelopeError::Skew(skew));
        }
        // Signed for our own key: the header alone proves nothing.
        let m = message(me, method, path_and_query, self.time, &self.nonce, body);
        self.key
            .verify(&m, &self.signature)
            .map_err(|_| EnvelopeError::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn sender() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    fn me() -> PublicKey {
        SecretKey::from_seed(&[8; 32]).public()
    }

    fn parsed(e: &Envelope) -> Result<Envelope, EnvelopeError> {
        let h = e.headers();
        Envelope::parse(|name| h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()))
    }

    #[test]
    fn a_signed_envelope_parses_back_and_binds_everything_it_signs() {
        let nonce = "0a".repeat(16);
        let e = Envelope::sign(&sender(), &me(), "POST", "/a?x=1", NOW, &nonce, b"body");
        let p = parsed(&e).unwrap();
        assert_eq!(p, e);
        assert_eq!(
            p.verify(&me(), NOW + MAX_SKEW_MS, "POST", "/a?x=1", b"body"),
            Ok(())
        );
        for (method, path, body) in [
            ("GET", "/a?x=1", &b"body"[..]),
            ("POST", "/a?x=2", b"body"),
            ("POST", "/a?x=1", b"bodY"),
        ] {
            assert_eq!(
                p.verify(&me(), NOW, method, path, body),
                Err(EnvelopeError::Signature)
            );
        }
        let stale = p.verify(&me(), NOW + MAX_SKEW_MS + 1, "POST", "/a?x=1", b"body");
        assert_eq!(stale, Err(EnvelopeError::Skew(MAX_SKEW_MS + 1)));
        let other = SecretKey::from_seed(&[9; 32]).public();
        assert_eq!(
            p.verify(&other, NOW, "POST", "/a?x=1", b"body"),
            Err(EnvelopeError::Receiver(me().to_hex()))
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let e = Envelope::sign(&sender(), &me(), "POST", "/a", NOW, &"00".repeat(16), b"");
        for (name, bad) in [
            (KEY, "zz"),
            (TO, ""),
            (TIME, "-1"),
            (NONCE, "00"),
            (SIGNATURE, "00"),
        ] {
            let h = e.headers();
            let got = Envelope::parse(|n| {
                if n == name {
                    Some(bad)
                } else {
                    h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str())
                }
            });
            assert_eq!(got, Err(EnvelopeError::Header(name)));
        }
        assert_eq!(Envelope::parse(|_| None), Err(EnvelopeError::Header(KEY)));
    }
}
