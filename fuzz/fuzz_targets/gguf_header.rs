//! GGUF model files (downloaded, so untrusted): the header, metadata and
//! tensor directory parse or are refused, with every tensor inside the file.
//! The check itself is `verinfer_fuzzing::gguf_header`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::gguf_header(data));
