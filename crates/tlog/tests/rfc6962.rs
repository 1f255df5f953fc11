//! The Merkle tree checked against a reference written from RFC 6962 §2.1
//! alone: this file hashes with `sha2` directly and calls nothing of
//! `verinfer_tlog::merkle` to compute what it expects, so a bug shared by the
//! tree and its reference cannot cancel out. The RFC's test tree (the 8
//! leaves transparency-dev/merkle uses) is pinned as literals, and
//! cross-checked against the roots in `testdata/rfc6962`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use verinfer_tlog::merkle::{leaf_hash, verify_consistency, verify_inclusion, Tree};
use verinfer_types::Hash;

/// RFC 6962 §2.1, word for word: the reference the tree is checked against.
mod reference {
    use super::{Digest, Sha256};

    pub(crate) type H = [u8; 32];

    /// `SHA-256(0x00 || d)`.
    pub(crate) fn leaf(d: &[u8]) -> H {
        Sha256::new()
            .chain_update([0x00])
            .chain_update(d)
            .finalize()
            .into()
    }

    /// `SHA-256(0x01 || left || right)`.
    fn interior(left: &H, right: &H) -> H {
        Sha256::new()
            .chain_update([0x01])
            .chain_update(left)
            .chain_update(right)
            .finalize()
            .into()
    }

    /// "k is the largest power of two smaller than n", counted up from 1.
    fn k(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    /// MTH(D[n]).
    pub(crate) fn mth(d: &[Vec<u8>]) -> H {
        match d.len() {
            0 => Sha256::digest([]).into(),
            1 => leaf(&d[0]),
            n => interior(&mth(&d[..k(n)]), &mth(&d[k(n)..])),
        }
    }

    /// PATH(m, D[n]): the audit path of leaf `m`.
    pub(crate) fn path(m: usize, d: &[Vec<u8>]) -> Vec<H> {
        let n = d.len();
        if n == 1 {
            return Vec::new();
        }
        let k = k(n);
        if m < k {
            let mut p = path(m, &d[..k]);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = path(m - k, &d[k..]);
            p.push(mth(&d[..k]));
            p
        }
    }

    /// PROOF(m, D[n]) = SUBPROOF(m, D[n], true).
    pub(crate) fn proof(m: usize, d: &[Vec<u8>]) -> Vec<H> {
        subproof(m, d, true)
    }

    fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<H> {
        let n = d.len();
        if m == n {
            return if b { Vec::new() } else { vec![mth(d)] };
        }
        let k = k(n);
        if m <= k {
            let mut p = subproof(m, &d[..k], b);
            p.push(mth(&d[k..]));
            p
        } else {
            let mut p = subproof(m - k, &d[k..], false);
            p.push(mth(&d[..k]));
            p
        }
    }
}

/// The 8 leaves of the RFC 6962 test tree, as transparency-dev/merkle
/// (`testonly`) and the vectors use them.
const TEST_TREE: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Their leaf hashes, SHA-256(0x00 || leaf).
const TEST_TREE_LEAF_HASHES: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
];

/// Roots of the test tree's first n leaves, n = 0..=8 (n = 0 is the empty
/// tree, SHA-256 of nothing).
const TEST_TREE_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h(s: &str) -> [u8; 32] {
    unhex(s).try_into().unwrap()
}

fn test_tree() -> Vec<Vec<u8>> {
    TEST_TREE.iter().map(|l| unhex(l)).collect()
}

fn tree_of(d: &[Vec<u8>]) -> Tree {
    let mut t = Tree::new();
    for e in d {
        t.push(leaf_hash(e));
    }
    t
}

fn raw(p: &[Hash]) -> Vec<[u8; 32]> {
    p.iter().map(|h| h.0).collect()
}

fn hashes(p: &[[u8; 32]]) -> Vec<Hash> {
    p.iter().copied().map(Hash).collect()
}

#[test]
fn known_hashes_are_pinned() {
    // From the vectors' README: the empty tree and the empty leaf.
    let empty_tree = h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    let empty_leaf = h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
    assert_eq!(reference::mth(&[]), empty_tree);
    assert_eq!(reference::leaf(b""), empty_leaf);
    assert_eq!(Tree::new().root(0).unwrap().0, empty_tree);
    assert_eq!(leaf_hash(b"").0, empty_leaf);
}

#[test]
fn rfc_test_tree_leaves_and_roots_are_pinned() {
    let d = test_tree();
    let t = tree_of(&d);
    for (i, want) in TEST_TREE_LEAF_HASHES.iter().enumerate() {
        assert_eq!(reference::leaf(&d[i]), h(want), "reference leaf {i}");
        assert_eq!(leaf_hash(&d[i]).0, h(want), "leaf_hash {i}");
    }
    for (n, want) in TEST_TREE_ROOTS.iter().enumerate() {
        assert_eq!(reference::mth(&d[..n]), h(want), "reference root {n}");
        assert_eq!(t.root(n as u64).unwrap().0, h(want), "tree root {n}");
    }
}

/// The vectors' roots and proofs of the test tree (the numbered cases'
/// happy paths) are what the reference computes.
#[test]
fn reference_agrees_with_the_vectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/rfc6962");
    let d = test_tree();
    let json = |kind: &str, case: u32| -> serde_json::Value {
        let p = dir
            .join(kind)
            .join(case.to_string())
            .join("happy-path.json");
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    };
    let b64 = |v: &serde_json::Value| -> [u8; 32] {
        B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
    };
    let list = |v: &serde_json::Value| -> Vec<[u8; 32]> {
        v.as_array().into_iter().flatten().map(b64).collect()
    };
    let mut checked = 0;
    for case in 0..5 {
        let v = json("inclusion", case);
        let (m, n) = (
            v["leafIdx"].as_u64().unwrap(),
            v["treeSize"].as_u64().unwrap(),
        );
        let (m, n) = (m as usize, n as usize);
        assert_eq!(b64(&v["root"]), reference::mth(&d[..n]), "inclusion {case}");
        assert_eq!(b64(&v["leafHash"]), reference::leaf(&d[m]));
        assert_eq!(
            list(&v["proof"]),
            reference::path(m, &d[..n]),
            "inclusion {case}"
        );
        let v = json("consistency", case);
        let (m, n) = (v["size1"].as_u64().unwrap(), v["size2"].as_u64().unwrap());
        let (m, n) = (m as usize, n as usize);
        assert_eq!(
            b64(&v["root1"]),
            reference::mth(&d[..m]),
            "consistency {case}"
        );
        assert_eq!(
            b64(&v["root2"]),
            reference::mth(&d[..n]),
            "consistency {case}"
        );
        assert_eq!(
            list(&v["proof"]),
            reference::proof(m, &d[..n]),
            "consistency {case}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5);
}

/// Every root and proof of the tree, at every size of the test tree and of
/// a 70-leaf tree, is the reference's, and verifies.
#[test]
fn tree_matches_the_reference_exhaustively_in_small_trees() {
    let small: Vec<Vec<u8>> = (0..70u64).map(|i| i.to_be_bytes().to_vec()).collect();
    for d in [test_tree(), small] {
        let t = tree_of(&d);
        for n in 1..=d.len() {
            let root = reference::mth(&d[..n]);
            assert_eq!(t.root(n as u64).unwrap().0, root, "size {n}");
            for m in 0..n {
                let want = reference::path(m, &d[..n]);
                let got = t.inclusion_proof(m as u64, n as u64).unwrap();
                assert_eq!(raw(&got), want, "inclusion {m} in {n}");
                let leaf = Hash(reference::leaf(&d[m]));
                verify_inclusion(m as u64, n as u64, &leaf, &hashes(&want), &Hash(root)).unwrap();
            }
            for m in 1..=n {
                let want = reference::proof(m, &d[..n]);
                let got = t.consistency_proof(m as u64, n as u64).unwrap();
                assert_eq!(raw(&got), want, "consistency {m} -> {n}");
                let old = Hash(reference::mth(&d[..m]));
                verify_consistency(m as u64, n as u64, &old, &Hash(root), &hashes(&want)).unwrap();
            }
        }
        assert!(t.root(d.len() as u64 + 1).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The same at arbitrary sizes, one leaf and one old size per case.
    #[test]
    fn tree_matches_the_reference_at_random_sizes(n in 1usize..3000, a in any::<usize>(), b in any::<usize>()) {
        let d: Vec<Vec<u8>> = (0..n as u64).map(|i| i.to_be_bytes().to_vec()).collect();
        let t = tree_of(&d);
        let root = reference::mth(&d);
        prop_assert_eq!(t.root(n as u64).unwrap().0, root);
        let m = a % n;
        let want = reference::path(m, &d);
        prop_assert_eq!(raw(&t.inclusion_proof(m as u64, n as u64).unwrap()), want.clone());
        let leaf = Hash(reference::leaf(&d[m]));
        prop_assert!(verify_inclusion(m as u64, n as u64, &leaf, &hashes(&want), &Hash(root)).is_ok());
        let m = 1 + b % n;
        let want = reference::proof(m, &d);
        prop_assert_eq!(raw(&t.consistency_proof(m as u64, n as u64).unwrap()), want.clone());
        let old = Hash(reference::mth(&d[..m]));
        prop_assert!(verify_consistency(m as u64, n as u64, &old, &Hash(root), &hashes(&want)).is_ok());
    }
}
