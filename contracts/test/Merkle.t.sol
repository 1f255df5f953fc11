// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {MerkleGen} from "./utils/MerkleGen.sol";
import {MerkleHarness} from "./utils/MerkleHarness.sol";

/// The consistency verifier against proofs generated from the RFC's
/// recursive definitions, and the generator against the RFC 6962 test tree.
contract MerkleTest is Test {
    MerkleHarness h;

    function setUp() public {
        h = new MerkleHarness();
    }

    /// The 8 leaves of the RFC 6962 / transparency-dev test tree.
    function rfcLeaves() internal pure returns (bytes32[] memory l) {
        bytes[8] memory data = [
            bytes(hex""),
            hex"00",
            hex"10",
            hex"2021",
            hex"3031",
            hex"40414243",
            hex"5051525354555657",
            hex"606162636465666768696a6b6c6d6e6f"
        ];
        l = new bytes32[](8);
        for (uint256 i; i < 8; ++i) {
            l[i] = sha256(abi.encodePacked(bytes1(0x00), data[i]));
        }
    }

    function test_generator_matches_rfc6962_roots_and_vector_proofs() public view {
        bytes32[] memory l = rfcLeaves();
        assertEq(l[0], 0x6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d, "leaf of empty string");
        assertEq(MerkleGen.root(l, 0), 0xe3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855, "empty");
        assertEq(MerkleGen.root(l, 2), 0xfac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125, "root 2");
        assertEq(MerkleGen.root(l, 5), 0x4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4, "root 5");
        assertEq(MerkleGen.root(l, 6), 0x76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef, "root 6");
        assertEq(MerkleGen.root(l, 7), 0xddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c, "root 7");
        assertEq(MerkleGen.root(l, 8), 0x5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328, "root 8");
        // Vector 4/happy-path: 6 -> 7.
        bytes32[] memory p = MerkleGen.consistencyProof(l, 6, 7);
        assertEq(p.length, 3, "proof length");
        assertEq(p[0], 0x0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a, "p0");
        assertEq(p[1], 0xb08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f, "p1");
        assertEq(p[2], 0xd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7, "p2");
        // Vector 3/happy-path: 2 -> 5.
        p = MerkleGen.consistencyProof(l, 2, 5);
        assertEq(p.length, 2, "proof length 2->5");
        assertEq(p[0], 0x5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e, "q0");
        assertEq(p[1], 0xbc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b, "q1");
    }

    /// Every pair 1 <= m <= n <= 8 of the RFC tree verifies.
    function test_all_pairs_of_rfc_tree() public view {
        bytes32[] memory l = rfcLeaves();
        for (uint256 n = 1; n <= 8; ++n) {
            for (uint256 m = 1; m <= n; ++m) {
                bytes32[] memory p = MerkleGen.consistencyProof(l, m, n);
                assertTrue(h.verify(m, n, MerkleGen.root(l, m), MerkleGen.root(l, n), p), "pair verifies");
            }
        }
    }

    /// Random sizes up to 300: the honest proof verifies; swapping or
    /// flipping a root, or flipping a bit of any one proof element, fails.
    function testFuzz_consistency(uint256 a, uint256 b, uint256 flip) public view {
        uint256 n = 2 + (b % 299);
        uint256 m = 1 + (a % (n - 1));
        bytes32[] memory l = MerkleGen.leaves(n);
        bytes32 r1 = MerkleGen.root(l, m);
        bytes32 r2 = MerkleGen.root(l, n);
        bytes32[] memory p = MerkleGen.consistencyProof(l, m, n);
        assertTrue(h.verify(m, n, r1, r2, p), "honest proof");
        assertFalse(h.verify(m, n, r2, r1, p), "swapped roots");
        // (Sizes are not mutated here: a proof binds the roots given the
        // sizes, but the same opaque proof can fit a neighbouring size2 whose
        // tree has the same shape at the proof's levels; settlement takes
        // newSize from the quorum-signed checkpoint, not from the proof.)
        assertFalse(h.verify(m, n, r1, bytes32(uint256(r2) ^ 1), p), "root2 flipped");
        if (p.length != 0) {
            uint256 i = flip % p.length;
            p[i] = bytes32(uint256(p[i]) ^ (1 << (flip % 256)));
            assertFalse(h.verify(m, n, r1, r2, p), "proof element flipped");
        }
    }
}
