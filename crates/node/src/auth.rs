//! Authenticated messages between nodes.
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
//! receiver accepts a message only when it names the receiver's own key
//! (a message for one node is worth nothing at another), only within
//! [`MAX_SKEW_MS`] of its own clock, and only once: it remembers the nonces
//! it accepted for twice that window, in memory and in a file of its data
//! directory, so a restart does not reopen the window (see [`Gate::open`]).
//!
//! Checking is in two steps so that a role decides who may call it before
//! anything is remembered: [`Gate::verify`] checks the envelope,
//! [`Gate::admit`] refuses a replay and records the nonce.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use verinfer_types::{Hash, PublicKey, SecretKey, Signature};

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
/// File (in a node's data directory) of the nonces accepted lately.
pub const NONCE_FILE: &str = "auth-nonces";

const DOMAIN: &str = "verinfer-http-v2";
/// How long a nonce is remembered: a message is fresh for `MAX_SKEW_MS`
/// either side of the receiver's clock.
const KEEP_MS: u64 = 2 * MAX_SKEW_MS;
/// Appended lines between two rewrites of the nonce file.
const COMPACT_EVERY: usize = 50_000;

/// Why a message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
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

fn message(
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

/// The headers that authenticate `body` sent by `key` to the node `to` as
/// `METHOD path`.
pub fn sign(
    key: &SecretKey,
    to: &PublicKey,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> HeaderMap {
    let time = now_ms();
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let sig = key.sign(&message(to, method, path_and_query, time, &nonce, body));
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put(KEY, key.public().to_hex());
    put(TO, to.to_hex());
    put(TIME, time.to_string());
    put(NONCE, nonce);
    put(SIGNATURE, sig.to_hex());
    h
}

/// An authentic message not yet admitted (see [`Gate::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The sender.
    pub key: PublicKey,
    nonce: String,
}

/// The nonces accepted lately, and the file that keeps them.
struct Seen {
    nonces: HashMap<(PublicKey, String), u64>,
    file: File,
    path: PathBuf,
    appended: usize,
}

/// Checks signed messages addressed to one node and remembers their nonces.
pub struct Gate {
    me: PublicKey,
    seen: Mutex<Seen>,
}

impl Gate {
    /// The gate of node `me`, keeping its nonces in `dir`/[`NONCE_FILE`].
    ///
    /// The nonces still inside the window are read back on open, so a
    /// replay right after a restart is refused like any other. Lines are
    /// appended without an fsync: a process that exits or crashes leaves
    /// them in the page cache, which is what a quick restart reads; only a
    /// machine crash can lose the last ones, and a machine takes longer to
    /// come back than the window lasts. A torn last line is skipped.
    pub fn open(me: PublicKey, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(NONCE_FILE);
        let now = now_ms();
        let mut nonces = HashMap::new();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    if let Some((key, nonce, at)) = parse_line(line) {
                        if now.saturating_sub(at) <= KEEP_MS {
                            nonces.insert((key, nonce), at);
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let file = rewrite(&path, &nonces)?;
        Ok(Gate {
            me,
            seen: Mutex::new(Seen {
                nonces,
                file,
                path,
                appended: 0,
            }),
        })
    }

    /// The node this gate admits messages for.
    pub fn me(&self) -> &PublicKey {
        &self.me
    }

    /// The sender of an authentic message addressed to this node and within
    /// the clock window; refuses forgeries. Remembers nothing.
    pub fn verify(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Signed, AuthError> {
        let get = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .ok_or(AuthError::Header(name))
        };
        let key: PublicKey = get(KEY)?.parse().map_err(|_| AuthError::Header(KEY))?;
        let to: PublicKey = get(TO)?.parse().map_err(|_| AuthError::Header(TO))?;
        let time: u64 = get(TIME)?.parse().map_err(|_| AuthError::Header(TIME))?;
        let nonce = get(NONCE)?;
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Header(NONCE));
        }
        let sig: Signature = get(SIGNATURE)?
            .parse()
            .map_err(|_| AuthError::Header(SIGNATURE))?;
        if to != self.me {
            return Err(AuthError::Receiver(to.to_hex()));
        }
        let skew = now_ms().abs_diff(time);
        if skew > MAX_SKEW_MS {
            return Err(AuthError::Skew(skew));
        }
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        // Signed for our own key: the header alone proves nothing.
        key.verify(
            &message(&self.me, method.as_str(), path, time, nonce, body),
            &sig,
        )
        .map_err(|_| AuthError::Signature)?;
        Ok(Signed {
            key,
            nonce: nonce.to_ascii_lowercase(),
        })
    }

    /// Admits a verified message once: refuses a nonce seen within the
    /// window and remembers this one.
    pub fn admit(&self, m: &Signed) -> Result<PublicKey, AuthError> {
        let now = now_ms();
        let mut seen = verinfer_types::sync::lock(&self.seen);
        let id = (m.key, m.nonce.clone());
        if seen.nonces.contains_key(&id) {
            return Err(AuthError::Replay);
        }
        seen.nonces.insert(id, now);
        let line = format!("{now} {} {}\n", m.key.to_hex(), m.nonce);
        // On disk before the message is acted on: a nonce lost in a crash
        // would let its message be replayed after the restart.
        if let Err(e) = seen
            .file
            .write_all(line.as_bytes())
            .and_then(|()| seen.file.sync_data())
        {
            tracing::warn!(error = %e, "cannot record a nonce: a replay after a restart may pass");
        }
        seen.appended += 1;
        if seen.appended >= COMPACT_EVERY {
            seen.nonces
                .retain(|_, at| now.saturating_sub(*at) <= KEEP_MS);
            match rewrite(&seen.path, &seen.nonces) {
                Ok(f) => {
                    seen.file = f;
                    seen.appended = 0;
                }
                Err(e) => tracing::warn!(error = %e, "cannot compact the nonce file"),
            }
        }
        Ok(m.key)
    }

    /// [`Gate::verify`] then [`Gate::admit`], for callers that admit anyone.
    pub fn check(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<PublicKey, AuthError> {
        let m = self.verify(method, uri, headers, body)?;
        self.admit(&m)
    }
}

fn parse_line(line: &str) -> Option<(PublicKey, String, u64)> {
    let mut parts = line.split(' ');
    let at = parts.next()?.parse().ok()?;
    let key = parts.next()?.parse().ok()?;
    let nonce = parts.next()?;
    (nonce.len() == 32 && parts.next().is_none()).then(|| (key, nonce.to_string(), at))
}

/// Writes `nonces` to `path` atomically and durably (a crash leaves the old
/// file or the new one) and opens it for appending.
fn rewrite(path: &Path, nonces: &HashMap<(PublicKey, String), u64>) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut text = String::with_capacity(nonces.len() * 100);
    for ((key, nonce), at) in nonces {
        text.push_str(&format!("{at} {} {nonce}\n", key.to_hex()));
    }
    let mut f = File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::from_seed(&[7; 32])
    }

    fn receiver() -> SecretKey {
        SecretKey::from_seed(&[8; 32])
    }

    fn gate(dir: &tempfile::TempDir) -> Gate {
        Gate::open(receiver().public(), dir.path()).unwrap()
    }

    #[test]
    fn accepts_once_and_refuses_replay_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let (k, to) = (key(), receiver().public());
        let h = sign(&k, &to, "POST", "/verifier/check?x=1", b"body");
        let gate = gate(&dir);
        let uri: Uri = "/verifier/check?x=1".parse().unwrap();
        assert_eq!(gate.check(&Method::POST, &uri, &h, b"body"), Ok(k.public()));
        assert_eq!(
            gate.check(&Method::POST, &uri, &h, b"body"),
            Err(AuthError::Replay)
        );
        let h = sign(&k, &to, "POST", "/verifier/check?x=1", b"body");
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
    fn refuses_a_message_addressed_to_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = SecretKey::from_seed(&[9; 32]).public();
        let h = sign(&key(), &elsewhere, "POST", "/a", b"");
        let uri: Uri = "/a".parse().unwrap();
        assert_eq!(
            gate(&dir).check(&Method::POST, &uri, &h, b""),
            Err(AuthError::Receiver(elsewhere.to_hex()))
        );
        // Naming this node in the header does not help: the signature binds
        // the receiver it was made for.
        let mut h = h;
        h.insert(TO, receiver().public().to_hex().parse().unwrap());
        assert_eq!(
            gate(&dir).check(&Method::POST, &uri, &h, b""),
            Err(AuthError::Signature)
        );
    }

    #[test]
    fn refuses_a_replay_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let h = sign(&key(), &receiver().public(), "POST", "/a", b"x");
        let uri: Uri = "/a".parse().unwrap();
        assert!(gate(&dir).check(&Method::POST, &uri, &h, b"x").is_ok());
        // A new process on the same data directory.
        let restarted = gate(&dir);
        assert_eq!(
            restarted.check(&Method::POST, &uri, &h, b"x"),
            Err(AuthError::Replay)
        );
        // Fresh messages still pass, and a torn line does not stop a restart.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(NONCE_FILE))
            .unwrap();
        f.write_all(b"12 ab").unwrap();
        let h = sign(&key(), &receiver().public(), "POST", "/a", b"y");
        assert!(gate(&dir).check(&Method::POST, &uri, &h, b"y").is_ok());
    }

    #[test]
    fn verify_remembers_nothing_until_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(&dir);
        let h = sign(&key(), &receiver().public(), "POST", "/a", b"");
        let uri: Uri = "/a".parse().unwrap();
        let m = gate.verify(&Method::POST, &uri, &h, b"").unwrap();
        assert!(gate.verify(&Method::POST, &uri, &h, b"").is_ok());
        assert_eq!(gate.admit(&m), Ok(key().public()));
        assert_eq!(gate.admit(&m), Err(AuthError::Replay));
    }

    #[test]
    fn refuses_stale_messages() {
        let dir = tempfile::tempdir().unwrap();
        let (k, to) = (key(), receiver().public());
        let time = now_ms() - 2 * MAX_SKEW_MS;
        let nonce = "00".repeat(16);
        let sig = k.sign(&message(&to, "POST", "/a", time, &nonce, b""));
        let mut h = HeaderMap::new();
        h.insert(KEY, k.public().to_hex().parse().unwrap());
        h.insert(TO, to.to_hex().parse().unwrap());
        h.insert(TIME, time.to_string().parse().unwrap());
        h.insert(NONCE, nonce.parse().unwrap());
        h.insert(SIGNATURE, sig.to_hex().parse().unwrap());
        let r = gate(&dir).check(&Method::POST, &"/a".parse().unwrap(), &h, b"");
        assert!(matches!(r, Err(AuthError::Skew(_))));
    }
}
