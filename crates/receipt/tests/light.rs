//! The light verifier stays light: its dependency tree holds no async
//! runtime, no server, no HTTP client and no engine, so an app can check
//! receipts without pulling in a node.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::process::Command;

/// Crates that would make the light verifier heavy, by name prefix.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "axum",
    "hyper",
    "reqwest",
    "tract",
    "alloy",
    "jsonschema",
    "verinfer-inference",
    "verinfer-log",
    "verinfer-verify",
    "verinfer-node",
];

#[test]
fn dependency_tree_has_no_runtime_server_or_engine() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "verinfer-receipt",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.contains(&"verinfer-tlog"), "unexpected tree:\n{tree}");
    let heavy: Vec<&&str> = names
        .iter()
        .filter(|n| FORBIDDEN.iter().any(|f| n.starts_with(f)))
        .collect();
    assert!(heavy.is_empty(), "the light verifier depends on {heavy:?}");
}
