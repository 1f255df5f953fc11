//! C2SP signed notes, verifier keys, checkpoints and cosignatures as they
//! arrive from logs and witnesses.
//! The check itself is `verinfer_fuzzing::signed_note`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::signed_note(data));
