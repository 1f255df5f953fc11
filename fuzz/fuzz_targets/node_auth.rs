//! Signed messages between nodes: the authentication headers (key, time,
//! nonce, signature) of any request are checked without a panic.
#![no_main]

use http::{HeaderMap, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use verinfer_node::auth::{Gate, KEY, NONCE, SIGNATURE, TIME};

fuzz_target!(|data: &[u8]| {
    // Lines: method, path, then one value per header; the rest is the body.
    let mut parts = data.splitn(7, |&b| b == b'\n');
    let mut next = || parts.next().unwrap_or_default();
    let method = Method::from_bytes(next()).unwrap_or(Method::POST);
    let uri = std::str::from_utf8(next())
        .ok()
        .and_then(|u| u.parse::<Uri>().ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for name in [KEY, TIME, NONCE, SIGNATURE] {
        if let Ok(v) = HeaderValue::from_bytes(next()) {
            headers.insert(name, v);
        }
    }
    let body = next();
    let _ = Gate::new().check(&method, &uri, &headers, body);
});
