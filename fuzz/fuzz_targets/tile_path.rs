//! C2SP tlog-tiles paths from HTTP clients: a path parses to a tile whose
//! arithmetic cannot overflow and which prints back as the same path, or is
//! refused (a 400). Entry bundles from a log parse or are refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use verinfer_log::tiles::{parse_bundle, Tile};

fuzz_target!(|data: &[u8]| {
    let _ = parse_bundle(data);
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tile) = Tile::parse(path) {
        assert_eq!(tile.path(), path.trim_start_matches('/'));
        assert!(tile.node_range().is_some());
        let _ = tile.exists_at(u64::MAX);
    }
});
