// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {MerkleConsistency} from "../../src/MerkleConsistency.sol";

/// Exposes the library with calldata arguments, as Verinfer.settle uses it.
contract MerkleHarness {
    function verify(uint256 size1, uint256 size2, bytes32 root1, bytes32 root2, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        return MerkleConsistency.verify(size1, size2, root1, root2, proof);
    }

    function nodeHash(bytes32 l, bytes32 r) external view returns (bytes32) {
        return MerkleConsistency.nodeHash(l, r);
    }
}
