// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MerkleConsistency} from "../../src/MerkleConsistency.sol";

/// @notice RFC 6962 tree hashes and consistency proofs computed in the test,
/// straight from the RFC's recursive definitions (MTH, PROOF/SUBPROOF), to
/// check the contract's iterative RFC 9162 verifier against.
library MerkleGen {
    /// Leaf hash SHA-256(0x00 || leaf) of the test leaf number `i`.
    function leafHash(uint256 i) internal pure returns (bytes32) {
        return sha256(abi.encodePacked(bytes1(0x00), "verinfer test leaf ", i));
    }

    function leaves(uint256 n) internal pure returns (bytes32[] memory l) {
        l = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            l[i] = leafHash(i);
        }
    }

    /// MTH(D[lo:hi]) over leaf hashes.
    function mth(bytes32[] memory l, uint256 lo, uint256 hi) internal view returns (bytes32) {
        uint256 n = hi - lo;
        if (n == 0) return sha256("");
        if (n == 1) return l[lo];
        uint256 k = largestPow2Below(n);
        return MerkleConsistency.nodeHash(mth(l, lo, lo + k), mth(l, lo + k, hi));
    }

    function root(bytes32[] memory l, uint256 n) internal view returns (bytes32) {
        return mth(l, 0, n);
    }

    /// PROOF(m, D[0:n]) of RFC 6962 section 2.1.2.
    function consistencyProof(bytes32[] memory l, uint256 m, uint256 n) internal view returns (bytes32[] memory out) {
        out = new bytes32[](130);
        uint256 len = _sub(l, m, 0, n, true, out, 0);
        assembly ("memory-safe") {
            mstore(out, len)
        }
    }

    function _sub(bytes32[] memory l, uint256 m, uint256 lo, uint256 hi, bool b, bytes32[] memory out, uint256 len)
        private
        view
        returns (uint256)
    {
        uint256 n = hi - lo;
        if (m == n) {
            if (!b) out[len++] = mth(l, lo, hi);
            return len;
        }
        uint256 k = largestPow2Below(n);
        if (m <= k) {
            len = _sub(l, m, lo, lo + k, b, out, len);
            out[len++] = mth(l, lo + k, hi);
        } else {
            len = _sub(l, m - k, lo + k, hi, false, out, len);
            out[len++] = mth(l, lo, lo + k);
        }
        return len;
    }

    /// The largest power of two strictly below n (n >= 2).
    function largestPow2Below(uint256 n) internal pure returns (uint256 k) {
        k = 1;
        while (k << 1 < n) k <<= 1;
    }
}
