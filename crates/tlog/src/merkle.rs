//! RFC 6962 / RFC 9162 Merkle trees: hashing, an in-memory tree of complete
//! subtrees, inclusion and consistency proofs, and their verification.
//!
//! The tree keeps the hash of every complete subtree (2N hashes for N
//! leaves, level by level), so any subtree hash the proofs need is either
//! stored or folded from at most log2(N) stored ones. These are exactly the
//! hashes C2SP tiles serve.

use sha2::{Digest, Sha256};
use verinfer_types::Hash;

/// Errors from proofs and their verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// Index or sizes out of range for the tree or for each other.
    #[error("invalid proof request: {0}")]
    Range(String),
    /// A hash that is not 32 bytes.
    #[error("hash is not 32 bytes")]
    HashLength,
    /// The proof has the wrong number of elements.
    #[error("proof has the wrong length")]
    Length,
    /// The proof does not lead to the expected root(s).
    #[error("proof does not verify: computed root does not match")]
    Mismatch,
}

/// SHA-256(0x00 || entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    Hash(h.finalize().into())
}

/// SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Hash::of(b"")
}

/// A 32-byte hash from a slice, or [`ProofError::HashLength`].
pub fn hash_from_slice(b: &[u8]) -> Result<Hash, ProofError> {
    b.try_into().map(Hash).map_err(|_| ProofError::HashLength)
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The hashes of all complete subtrees of a growing list of leaves.
///
/// `levels[l][k]` is the hash of leaves `k*2^l .. (k+1)*2^l`.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Tree::default()
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Appends a leaf hash, completing any subtrees it closes.
    pub fn push(&mut self, leaf: Hash) {
        let mut level = 0;
        let mut hash = leaf;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(hash);
            if row.len() % 2 == 1 {
                break;
            }
            hash = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
    }

    /// The stored hash of the complete subtree at `level`, index `k`.
    pub fn stored(&self, level: usize, k: u64) -> Option<&Hash> {
        self.levels.get(level)?.get(usize::try_from(k).ok()?)
    }

    /// Hash of leaves `start .. start+len`, where the RFC 6962 recursion keeps
    /// `start` aligned to the largest power of two <= `len`.
    fn range_hash(&self, start: u64, len: u64) -> Hash {
        debug_assert!(len >= 1 && start + len <= self.size());
        if len.is_power_of_two() {
            let level = len.trailing_zeros() as usize;
            return self.levels[level][(start >> level) as usize];
        }
        let k = split_point(len);
        node_hash(
            &self.range_hash(start, k),
            &self.range_hash(start + k, len - k),
        )
    }

    /// Root hash of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.range_hash(0, size)
        })
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::Range(format!(
                "size {size} is larger than the tree ({})",
                self.size()
            )));
        }
        Ok(())
    }

    /// Inclusion proof of leaf `index` in the tree of `size` leaves
    /// (RFC 6962 section 2.1.1), from the leaf upwards.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::Range(format!(
                "index {index} is not below size {size}"
            )));
        }
        let mut proof = Vec::with_capacity(64 - size.leading_zeros() as usize);
        let (mut m, mut start, mut n) = (index, 0u64, size);
        // Iterative form of PATH(m, D[start:start+n]): collect top-down, then reverse.
        while n > 1 {
            let k = split_point(n);
            if m < k {
                proof.push(self.range_hash(start + k, n - k));
                n = k;
            } else {
                proof.push(self.range_hash(start, k));
                m -= k;
                start += k;
                n -= k;
            }
        }
        proof.reverse();
        Ok(proof)
    }

    /// Consistency proof between the trees of `old` and `new` leaves
    /// (RFC 6962 section 2.1.2). Requires 0 < old <= new <= size.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        if old == 0 || old > new {
            return Err(ProofError::Range(format!(
                "consistency needs 0 < old <= new, got old {old}, new {new}"
            )));
        }
        let mut proof = Vec::new();
        let (mut m, mut start, mut n, mut complete) = (old, 0u64, new, true);
        // Iterative SUBPROOF(m, D[start:start+n], complete), top-down then reversed.
        while m != n {
            let k = split_point(n);
            if m <= k {
                proof.push(self.range_hash(start + k, n - k));
                n = k;
            } else {
                proof.push(self.range_hash(start, k));
                m -= k;
                start += k;
                n -= k;
                complete = false;
            }
        }
        if !complete {
            proof.push(self.range_hash(start, n));
        }
        proof.reverse();
        Ok(proof)
    }
}

/// Verifies that `leaf` is at `index` in the tree of `size` leaves with
/// `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "index {index} is not below size {size}"
        )));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Verifies that the tree of `old` leaves with `old_root` is a prefix of the
/// tree of `new` leaves with `new_root` (RFC 9162 section 2.1.4.2).
///
/// Edge rules (those of the reference verifier): `old = 0` is an error, and
/// `old = new` needs an empty proof and equal roots.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old == 0 || old > new {
        return Err(ProofError::Range(format!(
            "consistency needs 0 < old <= new, got old {old}, new {new}"
        )));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    let (first, rest): (Hash, &[Hash]) = if old.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((h, rest)) => (*h, rest),
            None => return Err(ProofError::Length),
        }
    };
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// [`verify_inclusion`] over raw byte strings, as proofs arrive from outside
/// (base64 in JSON): every hash must be 32 bytes.
pub fn verify_inclusion_raw(
    index: u64,
    size: u64,
    leaf: &[u8],
    proof: &[Vec<u8>],
    root: &[u8],
) -> Result<(), ProofError> {
    let proof = proof
        .iter()
        .map(|p| hash_from_slice(p))
        .collect::<Result<Vec<_>, _>>()?;
    verify_inclusion(
        index,
        size,
        &hash_from_slice(leaf)?,
        &proof,
        &hash_from_slice(root)?,
    )
}

/// [`verify_consistency`] over raw byte strings. As in the reference
/// verifier, equal sizes need an empty proof and byte-equal roots, whatever
/// their length.
pub fn verify_consistency_raw(
    old: u64,
    new: u64,
    old_root: &[u8],
    new_root: &[u8],
    proof: &[Vec<u8>],
) -> Result<(), ProofError> {
    if old == new && old > 0 {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    let proof = proof
        .iter()
        .map(|p| hash_from_slice(p))
        .collect::<Result<Vec<_>, _>>()?;
    verify_consistency(
        old,
        new,
        &hash_from_slice(old_root)?,
        &hash_from_slice(new_root)?,
        &proof,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(n: u64) -> Tree {
        let mut t = Tree::new();
        for i in 0..n {
            t.push(leaf_hash(&i.to_be_bytes()));
        }
        t
    }

    #[test]
    fn all_proofs_verify_in_small_trees() {
        let t = tree(40);
        for n in 1..=40 {
            let root = t.root(n).unwrap();
            for i in 0..n {
                let p = t.inclusion_proof(i, n).unwrap();
                let leaf = leaf_hash(&i.to_be_bytes());
                verify_inclusion(i, n, &leaf, &p, &root).unwrap();
                assert!(verify_inclusion(i, n, &leaf_hash(b"x"), &p, &root).is_err());
            }
            for m in 1..=n {
                let p = t.consistency_proof(m, n).unwrap();
                verify_consistency(m, n, &t.root(m).unwrap(), &root, &p).unwrap();
                if m < n {
                    assert!(verify_consistency(m, n, &root, &root, &p).is_err());
                }
            }
        }
    }

    #[test]
    fn out_of_range_requests_are_errors() {
        let t = tree(5);
        assert!(t.inclusion_proof(5, 5).is_err());
        assert!(t.inclusion_proof(0, 6).is_err());
        assert!(t.consistency_proof(0, 3).is_err());
        assert!(t.consistency_proof(4, 3).is_err());
        assert!(t.consistency_proof(3, 9).is_err());
    }
}
