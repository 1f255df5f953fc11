//! The RFC 6962 proof vectors of transparency-dev/merkle, from
//! `testdata/rfc6962` (see `testdata/README.md` for the edge rules).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use verinfer_tlog::merkle::{verify_consistency_raw, verify_inclusion_raw};

fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/rfc6962")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn decode(s: &str) -> Vec<u8> {
    B64.decode(s).unwrap()
}

fn proof(p: &Option<Vec<String>>) -> Vec<Vec<u8>> {
    p.iter().flatten().map(|h| decode(h)).collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    want_err: bool,
    desc: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    want_err: bool,
    desc: String,
}

#[test]
fn inclusion_vectors() {
    let all = files(&vectors_dir().join("inclusion"));
    assert!(all.len() > 80, "found only {} inclusion vectors", all.len());
    for path in all {
        let v: Inclusion = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let result = verify_inclusion_raw(
            v.leaf_idx,
            v.tree_size,
            &decode(&v.leaf_hash),
            &proof(&v.proof),
            &decode(&v.root),
        );
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{}: {} -> {result:?}",
            path.display(),
            v.desc
        );
    }
}

#[test]
fn consistency_vectors() {
    let all = files(&vectors_dir().join("consistency"));
    assert!(
        all.len() > 90,
        "found only {} consistency vectors",
        all.len()
    );
    for path in all {
        let v: Consistency = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let result = verify_consistency_raw(
            v.size1,
            v.size2,
            &decode(&v.root1),
            &decode(&v.root2),
            &proof(&v.proof),
        );
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{}: {} -> {result:?}",
            path.display(),
            v.desc
        );
    }
}
