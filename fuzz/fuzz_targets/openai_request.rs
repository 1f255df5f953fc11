//! OpenAI-compatible request bodies, as the gateway parses them: any bytes
//! give a parsed request or a 400 naming the problem, never a panic.
//! The check itself is `verinfer_fuzzing::openai_request`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::openai_request(data));
