//! Canonical records from peers: every record type parses strictly, and
//! what parses is its own canonical encoding (one encoding per record).
//! The check itself is `verinfer_fuzzing::records`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::records(data));
