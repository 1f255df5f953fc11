// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {MerkleGen} from "./utils/MerkleGen.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Checkpoint settlement: sizes, consistency, quorum, netted transfers.
contract SettlementTest is Fixture {
    bytes32[] l; // leaf hashes of the test log
    bytes32[] none;

    function setUp() public override {
        super.setUp();
        l = MerkleGen.leaves(40);
        depositFor(alice, 100 ether);
        depositFor(bob, 100 ether);
    }

    function rootAt(uint256 n) internal view returns (bytes32) {
        return MerkleGen.root(l, n);
    }

    function proofOf(uint256 m, uint256 n) internal view returns (bytes32[] memory) {
        return MerkleGen.consistencyProof(l, m, n);
    }

    /// Three-way fee split of one receipt from alice: node, verifiers, treasury.
    function feeTransfers() internal view returns (bytes32[] memory t) {
        t = new bytes32[](5);
        t[0] = pack(alice, -10 ether);
        t[1] = pack(node, 7 ether);
        t[2] = pack(treasury, 1 ether);
        t[3] = pack(vaddrs[0], 1 ether);
        t[4] = pack(vaddrs[1], 1 ether);
        sortTransfers(t);
    }

    function test_first_settlement_from_size_zero_without_proof() public {
        bytes32[] memory t = feeTransfers();
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 7, v.EMPTY_ROOT(), rootAt(7), t);
        v.settle(0, 7, rootAt(7), none, t, noHolds, sigs);
        assertEq(v.settledSize(), 7, "size");
        assertEq(v.settledRoot(), rootAt(7), "root");
        (uint64 cs, bytes32 cr) = v.checkpoint();
        assertEq(cs, 7, "checkpoint() size");
        assertEq(cr, rootAt(7), "checkpoint() root");
        assertEq(balanceOf(alice), 90 ether, "payer debited");
        assertEq(balanceOf(node), 7 ether, "node credited");
        assertEq(balanceOf(treasury), 1 ether, "treasury credited");
        assertEq(balanceOf(vaddrs[0]), 1 ether, "verifier 0");
        assertEq(balanceOf(vaddrs[1]), 1 ether, "verifier 1");
        assertConserved();
    }

    /// A published model's fee: the publisher's share is one more netted
    /// credit, to an address that is neither a node nor a requester; it is
    /// escrow the publisher can withdraw, and the total is conserved.
    function test_publisher_share_is_credited_and_withdrawable() public {
        address publisher = makeAddr("publisher");
        bytes32[] memory t = new bytes32[](6);
        t[0] = pack(alice, -10 ether);
        t[1] = pack(publisher, 2 ether);
        t[2] = pack(node, 5.6 ether);
        t[3] = pack(treasury, 0.8 ether);
        t[4] = pack(vaddrs[0], 0.8 ether);
        t[5] = pack(vaddrs[1], 0.8 ether);
        sortTransfers(t);
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 4, v.EMPTY_ROOT(), rootAt(4), t);
        v.settle(0, 4, rootAt(4), none, t, noHolds, sigs);
        assertEq(balanceOf(publisher), 2 ether, "publisher credited");
        assertEq(balanceOf(alice), 90 ether, "payer debited the whole fee");
        assertConserved();
        vm.prank(publisher);
        v.requestWithdrawal(2 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(publisher);
        v.withdraw();
        assertEq(token.balanceOf(publisher), 2 ether, "publisher paid out");
        assertConserved();
    }

    function test_chain_of_settlements_with_consistency_proofs() public {
        uint64[6] memory sizes = [uint64(1), 2, 3, 8, 13, 40];
        uint64 prev;
        for (uint256 i; i < sizes.length; ++i) {
            uint64 n = sizes[i];
            bytes32[] memory t = t2(alice, -1 ether, node, 1 ether);
            bytes32[] memory proof = prev == 0 ? none : proofOf(prev, n);
            bytes memory sigs = checkpointSigs(firstKeys(3), prev, n, v.settledRoot(), rootAt(n), t);
            v.settle(prev, n, rootAt(n), proof, t, noHolds, sigs);
            prev = n;
        }
        assertEq(v.settledSize(), 40, "size");
        assertEq(balanceOf(node), 6 ether, "node paid six times");
        assertConserved();
    }

    function test_settlement_without_transfers() public {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 3, v.EMPTY_ROOT(), rootAt(3), none);
        v.settle(0, 3, rootAt(3), none, none, noHolds, sigs);
        assertEq(v.settledSize(), 3, "size");
    }

    function test_more_signatures_than_quorum_accepted() public {
        bytes memory sigs = checkpointSigs(firstKeys(4), 0, 3, v.EMPTY_ROOT(), rootAt(3), none);
        v.settle(0, 3, rootAt(3), none, none, noHolds, sigs);
        assertEq(v.settledSize(), 3, "size");
    }

    function test_anyone_can_submit() public {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 3, v.EMPTY_ROOT(), rootAt(3), none);
        vm.prank(address(0xDEAD));
        v.settle(0, 3, rootAt(3), none, none, noHolds, sigs);
        assertEq(v.settledSize(), 3, "size");
    }

    function test_digest_is_eip712() public view {
        bytes32[] memory t = feeTransfers();
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("verinfer"),
                keccak256("1"),
                block.chainid,
                address(v)
            )
        );
        assertEq(v.domainSeparator(), domain, "domain separator");
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256(
                    "Checkpoint(uint64 oldSize,uint64 newSize,bytes32 oldRoot,bytes32 newRoot,bytes32[] transfers,Hold[] holds)Hold(bytes32 result,address payer,address node,uint128 amount,uint64 window,bytes32 payout)"
                ),
                uint64(3),
                uint64(9),
                bytes32(uint256(1)),
                bytes32(uint256(2)),
                keccak256(abi.encodePacked(t)),
                keccak256("")
            )
        );
        assertEq(
            v.checkpointDigest(3, 9, bytes32(uint256(1)), bytes32(uint256(2)), t, noHolds),
            keccak256(abi.encodePacked(hex"1901", domain, structHash)),
            "checkpoint digest"
        );
        (bytes1 fields, string memory name, string memory version, uint256 chainId, address vc,,) = v.eip712Domain();
        assertEq(fields, bytes1(0x0f), "fields");
        assertEq(name, "verinfer", "name");
        assertEq(version, "1", "version");
        assertEq(chainId, block.chainid, "chain id");
        assertEq(vc, address(v), "verifying contract");
    }

    function test_domain_follows_chain_id_after_a_fork() public {
        bytes32 before = v.domainSeparator();
        vm.chainId(999);
        assertTrue(v.domainSeparator() != before, "domain changes with the chain id");
        (,,, uint256 chainId,,,) = v.eip712Domain();
        assertEq(chainId, 999, "eip712Domain follows");
    }

    // ------------------------------------------------------------ reverts

    /// Arguments are evaluated before expectRevert (forge would otherwise take
    /// a precompile or view call made while computing them as "the next call").
    function expectSettleRevert(
        bytes memory err,
        uint64 oldSize,
        uint64 newSize,
        bytes32 newRoot,
        bytes32[] memory proof,
        bytes32[] memory t,
        bytes memory sigs
    ) internal {
        // A bare selector names the error whatever its arguments (a signer
        // recovered from a signature over other content is not predictable).
        if (err.length == 4) vm.expectPartialRevert(bytes4(err));
        else vm.expectRevert(err);
        v.settle(oldSize, newSize, newRoot, proof, t, noHolds, sigs);
    }

    function sel(bytes4 s) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(s);
    }

    function settleFirst() internal {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        v.settle(0, 5, rootAt(5), none, none, noHolds, sigs);
    }

    function test_revert_StaleCheckpoint_replay() public {
        bytes32[] memory t = t2(alice, -1 ether, node, 1 ether);
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), t);
        v.settle(0, 5, rootAt(5), none, t, noHolds, sigs);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.StaleCheckpoint.selector, uint64(5), uint64(0)),
            0,
            5,
            rootAt(5),
            none,
            t,
            sigs
        );
    }

    function test_revert_StaleCheckpoint_gap() public {
        settleFirst();
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.StaleCheckpoint.selector, uint64(5), uint64(6)),
            6,
            9,
            rootAt(9),
            proofOf(6, 9),
            none,
            ""
        );
    }

    function test_revert_SizeNotIncreasing_equal() public {
        settleFirst();
        expectSettleRevert(sel(Verinfer.SizeNotIncreasing.selector), 5, 5, rootAt(5), none, none, "");
    }

    function test_revert_SizeNotIncreasing_first_zero() public {
        expectSettleRevert(sel(Verinfer.SizeNotIncreasing.selector), 0, 0, v.EMPTY_ROOT(), none, none, "");
    }

    function test_revert_InvalidConsistencyProof_first_with_proof() public {
        expectSettleRevert(sel(Verinfer.InvalidConsistencyProof.selector), 0, 5, rootAt(5), proofOf(3, 5), none, "");
    }

    function test_revert_InvalidConsistencyProof_fork() public {
        settleFirst();
        bytes32[] memory t;
        bytes memory sigs = checkpointSigs(firstKeys(3), 5, 9, rootAt(5), rootAt(9), t);
        v.settle(5, 9, rootAt(9), proofOf(5, 9), t, noHolds, sigs);
        // A fork: the same first 8 leaves, another 9th, extended to 12. Its
        // proof from 9 is self-consistent but starts from another root.
        bytes32[] memory forked = MerkleGen.leaves(12);
        forked[8] = bytes32(uint256(0xF0F0));
        bytes32 forkRoot = MerkleGen.root(forked, 12);
        bytes32[] memory proof = MerkleGen.consistencyProof(forked, 9, 12);
        expectSettleRevert(sel(Verinfer.InvalidConsistencyProof.selector), 9, 12, forkRoot, proof, none, "");
        // The honest extension goes through.
        sigs = checkpointSigs(firstKeys(3), 9, 12, rootAt(9), rootAt(12), t);
        v.settle(9, 12, rootAt(12), proofOf(9, 12), t, noHolds, sigs);
    }

    function test_revert_InvalidConsistencyProof_rewritten_history() public {
        settleFirst();
        // A size-9 tree whose first five leaves differ from the settled ones.
        bytes32[] memory other = MerkleGen.leaves(9);
        other[0] = bytes32(uint256(1));
        expectSettleRevert(
            sel(Verinfer.InvalidConsistencyProof.selector),
            5,
            9,
            MerkleGen.root(other, 9),
            MerkleGen.consistencyProof(other, 5, 9),
            none,
            ""
        );
    }

    function test_revert_InvalidConsistencyProof_truncated() public {
        settleFirst();
        bytes32[] memory p = proofOf(5, 9);
        bytes32[] memory shorter = new bytes32[](p.length - 1);
        for (uint256 i; i < shorter.length; ++i) {
            shorter[i] = p[i];
        }
        expectSettleRevert(sel(Verinfer.InvalidConsistencyProof.selector), 5, 9, rootAt(9), shorter, none, "");
    }

    function test_revert_BadSignatureLength() public {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            sel(Verinfer.BadSignatureLength.selector), 0, 5, rootAt(5), none, none, abi.encodePacked(sigs, bytes1(0))
        );
    }

    function test_revert_QuorumNotMet() public {
        bytes memory sigs = checkpointSigs(firstKeys(2), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.QuorumNotMet.selector, 2, 3), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_InvalidSignature() public {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        // Zero r: ecrecover returns address(0).
        for (uint256 i = 65; i < 97; ++i) {
            sigs[i] = 0;
        }
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.InvalidSignature.selector, 1), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_SignersNotAscending_duplicate() public {
        bytes memory sigs = checkpointSigs(keys3(vkeys[0], vkeys[1], vkeys[1]), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.SignersNotAscending.selector, 2), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_SignersNotAscending_descending() public {
        bytes memory sigs = checkpointSigs(keys3(vkeys[1], vkeys[0], vkeys[2]), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.SignersNotAscending.selector, 1), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_NotVerifier_inference_node() public {
        uint256[] memory k = sortKeysMem(keys3(vkeys[0], vkeys[1], nodeKey));
        bytes memory sigs = checkpointSigs(k, 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.NotVerifier.selector, node), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_NotVerifier_unregistered_key() public {
        uint256[] memory k = sortKeysMem(keys3(vkeys[0], vkeys[1], 0xBAD));
        bytes memory sigs = checkpointSigs(k, 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.NotVerifier.selector, vm.addr(0xBAD)), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_NotVerifier_unbonded_verifier() public {
        vm.prank(vaddrs[2]);
        v.unbond(MIN_STAKE);
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.NotVerifier.selector, vaddrs[2]), 0, 5, rootAt(5), none, none, sigs
        );
    }

    function test_revert_signature_over_other_content() public {
        // Signed for root(5), submitted with root(6): recovers other addresses.
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        expectSettleRevert(sel(Verinfer.NotVerifier.selector), 0, 5, rootAt(6), none, none, sigs);
    }

    function test_revert_signature_for_other_chain() public {
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), none);
        vm.chainId(999);
        expectSettleRevert(sel(Verinfer.NotVerifier.selector), 0, 5, rootAt(5), none, none, sigs);
    }

    function signed(bytes32[] memory t) internal view returns (bytes memory) {
        return checkpointSigs(firstKeys(3), 0, 5, v.EMPTY_ROOT(), rootAt(5), t);
    }

    function test_revert_TransfersNotSorted_order() public {
        bytes32[] memory t = t2(alice, -1 ether, node, 1 ether);
        (t[0], t[1]) = (t[1], t[0]);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.TransfersNotSorted.selector, 1), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_TransfersNotSorted_duplicate_account() public {
        bytes32[] memory t = new bytes32[](3);
        t[0] = pack(alice, -2 ether);
        t[1] = pack(alice, 1 ether);
        t[2] = pack(address(type(uint160).max), 1 ether);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.TransfersNotSorted.selector, 1), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_TransfersNotSorted_zero_address() public {
        bytes32[] memory t = t2(address(0), 1 ether, alice, -1 ether);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.TransfersNotSorted.selector, 0), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_ZeroTransfer() public {
        bytes32[] memory t = t2(alice, 0, node, 0);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.ZeroTransfer.selector, 0), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_Unbalanced_credit_exceeds_debit() public {
        bytes32[] memory t = t2(alice, -1 ether, node, 1 ether + 1);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.Unbalanced.selector, int256(1)), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_Unbalanced_debit_exceeds_credit() public {
        bytes32[] memory t = t1(alice, -1 ether);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.Unbalanced.selector, -int256(1 ether)), 0, 5, rootAt(5), none, t, signed(t)
        );
    }

    function test_revert_InsufficientBalance_settle() public {
        bytes32[] memory t = t2(alice, -101 ether, node, 101 ether);
        expectSettleRevert(
            abi.encodeWithSelector(Verinfer.InsufficientBalance.selector, alice, 100 ether, 101 ether),
            0,
            5,
            rootAt(5),
            none,
            t,
            signed(t)
        );
    }

    function test_revert_tampered_transfers() public {
        bytes32[] memory t = t2(alice, -1 ether, node, 1 ether);
        bytes memory sigs = signed(t);
        bytes32[] memory t2x = t2(bob, -1 ether, node, 1 ether);
        expectSettleRevert(sel(Verinfer.NotVerifier.selector), 0, 5, rootAt(5), none, t2x, sigs);
    }
}
