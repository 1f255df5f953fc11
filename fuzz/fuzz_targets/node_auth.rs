//! Signed messages between nodes: the envelope headers (key, receiver, time,
//! nonce, signature) of any request are checked without a panic.
//! The check itself is `verinfer_fuzzing::node_auth`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::node_auth(data));
