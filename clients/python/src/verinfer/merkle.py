"""RFC 6962 / RFC 9162 Merkle tree hashes and proof checks (SHA-256).

Leaf hash: SHA-256(0x00 || leaf); node hash: SHA-256(0x01 || left || right).
Proof checks follow RFC 9162 2.1.3.2 (inclusion) and 2.1.4.2 (consistency)
and raise :class:`ProofError` saying why a proof fails.
"""

from __future__ import annotations

import hashlib
from typing import Sequence


class ProofError(ValueError):
    """A Merkle proof that does not hold."""


def sha256(data: bytes) -> bytes:
    """SHA-256 of `data`."""
    return hashlib.sha256(data).digest()


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || leaf)."""
    return sha256(b"\x00" + leaf)


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return sha256(b"\x01" + left + right)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Checks that `leaf` (a leaf hash) is entry `index` of the tree of
    `size` entries with root `root`."""
    if not 0 <= index < size:
        raise ProofError(f"index {index} is not below size {size}")
    if len(leaf) != 32:
        raise ProofError("the leaf hash is not 32 bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is too short")
    if r != root:
        raise ProofError("the proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Checks that the tree of `size2` entries with root `root2` extends the
    tree of `size1` entries with root `root1`. A proof from the empty tree
    proves nothing and fails."""
    if size1 <= 0:
        raise ProofError("a proof from the empty tree proves nothing")
    if size1 > size2:
        raise ProofError(f"size {size1} is larger than size {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes need an empty proof")
        if root1 != root2:
            raise ProofError("equal sizes but different roots")
        return
    if not proof:
        raise ProofError("the proof is empty")
    # When size1 is a power of two, its root is the first node of the path.
    path = [root1, *proof] if size1 & (size1 - 1) == 0 else list(proof)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the proof is too short")
    if fr != root1:
        raise ProofError("the proof does not lead to the first root")
    if sr != root2:
        raise ProofError("the proof does not lead to the second root")
