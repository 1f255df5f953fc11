//! The checks run on every parser of untrusted input, one function per
//! parser, shared by the coverage-guided fuzz targets (`fuzz/`) and the
//! arbitrary-input property tests of the normal suite
//! (`tests/untrusted_input.rs`), so both drive exactly the same code. Each
//! takes any bytes and panics only when a property fails: a parser
//! panicked, or what it accepted does not print back as it came.

use axum::http::{HeaderMap, HeaderValue, Method, Uri};
use std::sync::OnceLock;
use verinfer_types::SecretKey;

/// A check: panics only when a property fails.
pub type Check = fn(&[u8]);

/// The fuzz targets by name (as in `fuzz/Cargo.toml` and `fuzz/seeds/`).
pub const TARGETS: [(&str, Check); 2] =
    [("openai_request", openai_request), ("node_auth", node_auth)];

/// OpenAI-compatible request bodies, as the gateway parses them: a parsed
/// request or a 400 naming the problem. Chat and plain completions parse
/// different fields of one body.
pub fn openai_request(data: &[u8]) {
    let _ = crate::roles::gateway::openai::parse(data, true);
    let _ = crate::roles::gateway::openai::parse(data, false);
}

/// Signed messages between nodes: the authentication headers (key,
/// receiver, time, nonce, signature) of any request are checked without a
/// panic. Input: lines of method, path, one value per header; the rest is
/// the body.
pub fn node_auth(data: &[u8]) {
    use crate::auth::{Gate, KEY, NONCE, SIGNATURE, TIME, TO};
    // One gate (and its nonce file) for the whole run.
    static GATE: OnceLock<(Gate, tempfile::TempDir)> = OnceLock::new();
    let (gate, _) = GATE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a directory for the nonce file");
        let me = SecretKey::from_seed(&[3; 32]).public();
        (Gate::open(me, dir.path()).expect("the gate"), dir)
    });
    let mut parts = data.splitn(8, |&b| b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let method = Method::from_bytes(next()).unwrap_or(Method::POST);
    let uri = std::str::from_utf8(next())
        .ok()
        .and_then(|u| u.parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for name in [KEY, TO, TIME, NONCE, SIGNATURE] {
        if let Ok(v) = HeaderValue::from_bytes(next()) {
            headers.insert(name, v);
        }
    }
    let body = next();
    let _ = gate.check(&method, &uri, &headers, body);
}
