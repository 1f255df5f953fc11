//! Receipt bundles as `verinfer verify` and `/v1/receipts` clients read
//! them: arbitrary JSON checks out or is refused with an error.
//! The check itself is `verinfer_fuzzing::receipt_bundle`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::receipt_bundle(data));
