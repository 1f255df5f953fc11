// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title RFC 6962 / RFC 9162 Merkle consistency proofs
/// @notice Node hash = SHA-256(0x01 || left || right) through the SHA-256
/// precompile (address 0x02). Leaves (SHA-256(0x00 || leaf)) never appear
/// here: a consistency proof holds only subtree hashes.
library MerkleConsistency {
    /// @notice RFC 9162 section 2.1.4.2: is the tree of `size2` with root
    /// `root2` an append-only extension of the tree of `size1` with `root1`?
    /// Edge rules as transparency-dev/merkle applies them: `size1 == 0` is
    /// never consistent; `size1 == size2` needs an empty proof and equal roots;
    /// `size1 > size2` is never consistent.
    function verify(uint256 size1, uint256 size2, bytes32 root1, bytes32 root2, bytes32[] calldata proof)
        internal
        view
        returns (bool)
    {
        if (size1 == 0 || size1 > size2) return false;
        if (size1 == size2) return proof.length == 0 && root1 == root2;
        // Step 1: an empty path fails.
        if (proof.length == 0) return false;
        uint256 fn = size1 - 1;
        uint256 sn = size2 - 1;
        uint256 i;
        bytes32 fr;
        // Step 2 and 5: if size1 is a power of two, the path implicitly starts
        // with root1; otherwise its first element is the starting hash.
        if ((size1 & fn) == 0) {
            fr = root1;
        } else {
            fr = proof[0];
            i = 1;
        }
        bytes32 sr = fr;
        // Step 4.
        while ((fn & 1) == 1) {
            fn >>= 1;
            sn >>= 1;
        }
        // Step 6.
        for (; i < proof.length; ++i) {
            if (sn == 0) return false;
            bytes32 c = proof[i];
            if ((fn & 1) == 1 || fn == sn) {
                fr = nodeHash(c, fr);
                sr = nodeHash(c, sr);
                while ((fn & 1) == 0 && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
            } else {
                sr = nodeHash(sr, c);
            }
            fn >>= 1;
            sn >>= 1;
        }
        // Step 7.
        return fr == root1 && sr == root2 && sn == 0;
    }

    /// @notice SHA-256(0x01 || left || right), written in scratch memory past
    /// the free-memory pointer (no allocation per hash).
    function nodeHash(bytes32 left, bytes32 right) internal view returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, 0x01)
            mstore(add(p, 1), left)
            mstore(add(p, 33), right)
            if iszero(staticcall(gas(), 0x02, p, 65, 0x00, 0x20)) { revert(0, 0) }
            h := mload(0x00)
        }
    }
}
