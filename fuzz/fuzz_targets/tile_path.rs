//! C2SP tlog-tiles paths from HTTP clients: a path parses to a tile whose
//! arithmetic cannot overflow and which prints back as the same path, or is
//! refused (a 400). Entry bundles from a log parse or are refused.
//! The check itself is `verinfer_fuzzing::tile_path`, which the property
//! tests of the normal suite run too.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| verinfer_fuzzing::tile_path(data));
