// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Slashing on the evidence of a verifier committee.
contract SlashTest is Fixture {
    bytes32 constant RESULT = keccak256("result");
    bytes32 constant REASON = keccak256("token 17 is not the arg-max");

    function expectSlashRevert(bytes memory err, address accused, bytes32 result, bytes memory sigs) internal {
        // A bare selector names the error whatever its arguments (a signer
        // recovered from a signature over other content is not predictable).
        if (err.length == 4) vm.expectPartialRevert(bytes4(err));
        else vm.expectRevert(err);
        v.slash(accused, result, REASON, anchor(), sigs);
    }

    function test_slash_inference_node() public {
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        v.slash(node, RESULT, REASON, anchor(), sigs);
        // 50% of 100 slashed; 10% of that (5) shared by 3 signers: 1.666.. each,
        // the remainder (45 + rounding) to the treasury.
        uint256 amount = 50 ether;
        uint256 each = 5 ether / uint256(3);
        (uint256 s,) = stakeOf(node);
        assertEq(s, 50 ether, "half the stake left");
        for (uint256 i; i < 3; ++i) {
            assertEq(balanceOf(vaddrs[i]), each, "committee reward");
        }
        assertEq(balanceOf(vaddrs[3]), 0, "non-signer gets nothing");
        assertEq(balanceOf(treasury), amount - 3 * each, "treasury remainder");
        assertTrue(v.slashed(keccak256(abi.encode(RESULT, node))), "marked");
        assertTrue(v.isSlashed(RESULT, node), "isSlashed");
        assertFalse(v.isSlashed(RESULT, vaddrs[3]), "another accused is not");
        assertConserved();
        (uint256 e, uint256 st,) = v.totals();
        assertEq(e, amount, "slashed stake moved to escrow accounts");
        assertEq(st, 4 * MIN_STAKE + 50 ether, "bonded total");
    }

    function test_slash_reaches_unbonding_stake() public {
        vm.prank(node);
        v.unbond(MIN_STAKE); // trying to leave before the evidence lands
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        v.slash(node, RESULT, REASON, anchor(), sigs);
        (uint256 s, uint256 u) = stakeOf(node);
        assertEq(s, 0, "bonded");
        assertEq(u, 50 ether, "half of the unbonding stake slashed");
        assertConserved();
    }

    function test_slash_takes_bonded_first_then_unbonding() public {
        fund(node, 100 ether);
        vm.prank(node);
        v.stake(100 ether);
        vm.prank(node);
        v.unbond(100 ether); // bonded 100, unbonding 100
        // Raise the share to 75% of 200 = 150: 100 bonded + 50 unbonding.
        Verinfer.Params memory p = currentParams();
        p.slashBps = 7500;
        storeParams(p);
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        v.slash(node, RESULT, REASON, anchor(), sigs);
        (uint256 s, uint256 u) = stakeOf(node);
        assertEq(s, 0, "bonded taken first");
        assertEq(u, 50 ether, "rest from unbonding");
        assertConserved();
    }

    function test_slash_verifier_on_losing_side_by_other_verifiers() public {
        address accused = vaddrs[3];
        bytes memory sigs = slashSigs(firstKeys(3), accused, RESULT, REASON);
        v.slash(accused, RESULT, REASON, anchor(), sigs);
        assertFalse(v.isActiveVerifier(accused), "below minimum: no longer counts for quorum");
        assertConserved();
    }

    function test_same_result_can_slash_two_accused() public {
        v.slash(node, RESULT, REASON, anchor(), slashSigs(firstKeys(3), node, RESULT, REASON));
        address accused = vaddrs[3];
        v.slash(accused, RESULT, REASON, anchor(), slashSigs(firstKeys(3), accused, RESULT, REASON));
        assertConserved();
    }

    function test_zero_reward_share_sends_all_to_treasury() public {
        Verinfer.Params memory p = currentParams();
        p.slashRewardBps = 0;
        storeParams(p);
        v.slash(node, RESULT, REASON, anchor(), slashSigs(firstKeys(3), node, RESULT, REASON));
        assertEq(balanceOf(treasury), 50 ether, "all to treasury");
        assertEq(balanceOf(vaddrs[0]), 0, "no reward");
        assertConserved();
    }

    // ------------------------------------------------------------ reverts

    function test_revert_AlreadySlashed() public {
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        v.slash(node, RESULT, REASON, anchor(), sigs);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.AlreadySlashed.selector), node, RESULT, sigs);
    }

    function test_revert_NotRegistered_accused() public {
        address nobody = address(0x1234);
        bytes memory sigs = slashSigs(firstKeys(3), nobody, RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.NotRegistered.selector, nobody), nobody, RESULT, sigs);
    }

    function test_revert_NothingToSlash() public {
        vm.prank(node);
        v.unbond(MIN_STAKE);
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.prank(node);
        v.withdrawUnbonded();
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.NothingToSlash.selector), node, RESULT, sigs);
    }

    function test_revert_AccusedInCommittee() public {
        address accused = vaddrs[1];
        bytes memory sigs = slashSigs(firstKeys(3), accused, RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.AccusedInCommittee.selector), accused, RESULT, sigs);
    }

    function test_revert_QuorumNotMet_slash() public {
        bytes memory sigs = slashSigs(firstKeys(2), node, RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.QuorumNotMet.selector, 2, 3), node, RESULT, sigs);
    }

    function test_revert_CommitteeNotMajority() public {
        // A slash quorum of 2 is met, but 2 of the 4 registered verifiers are
        // no majority: a minority committee cannot slash.
        Verinfer.Params memory p = currentParams();
        p.slashQuorum = 2;
        storeParams(p);
        assertEq(v.verifierCount(), 4, "four verifiers registered");
        bytes memory sigs = slashSigs(firstKeys(2), node, RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.CommitteeNotMajority.selector, 2, 4), node, RESULT, sigs);
        // Three of four is a majority.
        v.slash(node, RESULT, REASON, anchor(), slashSigs(firstKeys(3), node, RESULT, REASON));
        assertConserved();
    }

    /// A committee is judged at the Result's anchor: verifiers registered
    /// after it never count, and the majority is of those registered then.
    function test_revert_RegisteredAfterAnchor() public {
        uint64 before = anchor();
        vm.warp(block.timestamp + 60);
        // Five verifiers registered after the anchor: a majority of the
        // nine registered now, but not registered at the anchor.
        uint256[] memory late = new uint256[](5);
        for (uint256 i; i < 5; ++i) {
            late[i] = 0xbeef00 + i;
            address a = vm.addr(late[i]);
            registerNode(a, 2, MIN_STAKE);
        }
        assertEq(v.verifiersAt(before), 4, "four registered at the anchor");
        assertEq(v.verifiersAt(anchor()), 9, "nine now");
        late = sortKeysMem(late);
        bytes memory sigs = sign(late, v.slashDigest(node, RESULT, REASON, before));
        vm.expectPartialRevert(Verinfer.RegisteredAfterAnchor.selector);
        v.slash(node, RESULT, REASON, before, sigs);
        // Three of the four registered at the anchor do count, a majority of
        // those four though not of the nine registered now.
        v.slash(node, RESULT, REASON, before, sign(firstKeys(3), v.slashDigest(node, RESULT, REASON, before)));
        assertConserved();
    }

    function test_revert_AnchorInFuture() public {
        uint64 later = anchor() + 1;
        bytes memory sigs = sign(firstKeys(3), v.slashDigest(node, RESULT, REASON, later));
        vm.expectRevert(abi.encodeWithSelector(Verinfer.AnchorInFuture.selector, later));
        v.slash(node, RESULT, REASON, later, sigs);
    }

    function test_revert_BadSignatureLength_slash() public {
        bytes memory sigs = abi.encodePacked(slashSigs(firstKeys(3), node, RESULT, REASON), bytes2(0));
        expectSlashRevert(abi.encodeWithSelector(Verinfer.BadSignatureLength.selector), node, RESULT, sigs);
    }

    function test_revert_NotVerifier_slash_by_inference_node() public {
        uint256[] memory k = sortKeysMem(keys3(vkeys[0], vkeys[1], nodeKey));
        bytes memory sigs = slashSigs(k, vaddrs[3], RESULT, REASON);
        expectSlashRevert(abi.encodeWithSelector(Verinfer.NotVerifier.selector, node), vaddrs[3], RESULT, sigs);
    }

    function test_revert_evidence_for_another_result() public {
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        expectSlashRevert(abi.encodePacked(Verinfer.NotVerifier.selector), node, keccak256("other result"), sigs);
    }
}
