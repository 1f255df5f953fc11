// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Optimistic answers: a fee held for its window, paid out after it or
/// refunded on a challenge inside it; and vaults of accounts with no EVM
/// address yet.
contract OptimisticTest is Fixture {
    bytes32 constant RESULT = keccak256("result");
    bytes32 constant REASON = keccak256("token 17 is not the arg-max");
    uint128 constant FEE = 100 ether;
    uint64 constant WINDOW = 1 hours;

    function setUp() public override {
        super.setUp();
        depositFor(alice, 1000 ether);
    }

    /// The fee's payout: 70 to the node, 20 to a verifier, 10 to the treasury.
    function payout() internal view returns (bytes32[] memory t) {
        t = new bytes32[](3);
        t[0] = pack(node, 70 ether);
        t[1] = pack(vaddrs[0], 20 ether);
        t[2] = pack(treasury, 10 ether);
        t = sortTransfers(t);
    }

    function holdOf(uint64 window) internal view returns (Verinfer.Hold[] memory h) {
        h = new Verinfer.Hold[](1);
        h[0] = Verinfer.Hold({
            result: RESULT,
            payer: alice,
            node: node,
            amount: FEE,
            window: window,
            payout: keccak256(abi.encodePacked(payout()))
        });
    }

    /// Settles one optimistic answer: alice pays the fee into the hold.
    function settleHeld(uint64 window) internal returns (uint64 until) {
        settleTo(1, t1(alice, -int256(uint256(FEE))), holdOf(window));
        until = uint64(block.timestamp) + window;
        assertEq(balanceOf(alice), 900 ether, "the fee left the payer");
        assertEq(balanceOf(node), 0, "nobody paid yet");
        assertEq(v.heldUntil(node), until, "the node's stake is held");
        assertConserved();
    }

    function test_payout_after_the_window() public {
        uint64 until = settleHeld(WINDOW);
        bytes32[] memory p = payout();
        vm.expectRevert(abi.encodeWithSelector(Verinfer.WindowOpen.selector, until));
        v.release(RESULT, p);
        vm.warp(until);
        bytes32[] memory other = t1(node, int256(uint256(FEE)));
        vm.expectRevert(Verinfer.WrongPayout.selector);
        v.release(RESULT, other);
        v.release(RESULT, p);
        assertEq(balanceOf(node), 70 ether, "node");
        assertEq(balanceOf(vaddrs[0]), 20 ether, "verifier");
        assertEq(balanceOf(treasury), 10 ether, "treasury");
        assertEq(balanceOf(alice), 900 ether, "payer");
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NoHold.selector, RESULT));
        v.release(RESULT, p);
        // Once final, no challenge applies.
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NoHold.selector, RESULT));
        v.challenge(RESULT, REASON, anchor(), sigs);
        assertConserved();
    }

    function test_challenge_inside_the_window_refunds_and_slashes() public {
        settleHeld(WINDOW);
        vm.warp(block.timestamp + WINDOW - 1);
        v.challenge(RESULT, REASON, anchor(), slashSigs(firstKeys(3), node, RESULT, REASON));
        assertEq(balanceOf(alice), 1000 ether, "the whole fee back to the payer");
        assertEq(balanceOf(node), 0, "node unpaid");
        (uint256 s,) = stakeOf(node);
        assertEq(s, 50 ether, "node slashed as slash would");
        assertTrue(v.isSlashed(RESULT, node), "marked slashed");
        vm.warp(block.timestamp + 1);
        bytes32[] memory p = payout();
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NoHold.selector, RESULT));
        v.release(RESULT, p);
        assertConserved();
    }

    /// A fault slashed already still overturns the answer, without a second slash.
    function test_challenge_after_a_slash_refunds_only() public {
        settleHeld(WINDOW);
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        v.slash(node, RESULT, REASON, anchor(), sigs);
        v.challenge(RESULT, REASON, anchor(), sigs);
        assertEq(balanceOf(alice), 1000 ether, "refunded");
        (uint256 s,) = stakeOf(node);
        assertEq(s, 50 ether, "slashed once");
        assertConserved();
    }

    function test_late_challenge_is_refused() public {
        uint64 until = settleHeld(WINDOW);
        vm.warp(until);
        bytes memory sigs = slashSigs(firstKeys(3), node, RESULT, REASON);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.WindowClosed.selector, until));
        v.challenge(RESULT, REASON, anchor(), sigs);
    }

    function test_challenge_by_a_minority_is_refused() public {
        Verinfer.Params memory p = currentParams();
        p.slashQuorum = 2; // so that only the majority rule stands in the way
        storeParams(p);
        settleHeld(WINDOW);
        bytes memory sigs = slashSigs(firstKeys(2), node, RESULT, REASON);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.CommitteeNotMajority.selector, 2, 4));
        v.challenge(RESULT, REASON, anchor(), sigs);
        assertEq(balanceOf(alice), 900 ether, "no refund");
    }

    function test_challenge_by_verifiers_registered_after_the_anchor_is_refused() public {
        uint64 before = anchor();
        settleHeld(WINDOW);
        vm.warp(block.timestamp + 60);
        uint256[] memory late = new uint256[](5);
        for (uint256 i; i < 5; ++i) {
            late[i] = 0xbeef00 + i;
            registerNode(vm.addr(late[i]), 2, MIN_STAKE);
        }
        late = sortKeysMem(late);
        bytes memory sigs = sign(late, v.slashDigest(node, RESULT, REASON, before));
        vm.expectPartialRevert(Verinfer.RegisteredAfterAnchor.selector);
        v.challenge(RESULT, REASON, before, sigs);
        assertEq(balanceOf(alice), 900 ether, "no refund");
    }

    function test_the_held_node_cannot_withdraw_its_stake() public {
        uint64 until = settleHeld(UNBOND_DELAY + 1 days);
        vm.prank(node);
        v.unbond(MIN_STAKE);
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StakeHeld.selector, until));
        v.withdrawUnbonded();
        vm.warp(until);
        vm.prank(node);
        v.withdrawUnbonded();
        assertEq(token.balanceOf(node), MIN_STAKE, "withdrawn once the window closed");
        assertConserved();
    }

    function test_a_result_is_held_once() public {
        settleHeld(WINDOW);
        Verinfer.Hold[] memory h = holdOf(WINDOW);
        bytes32[] memory t = t1(alice, -int256(uint256(FEE)));
        vm.expectRevert(abi.encodeWithSelector(Verinfer.HoldExists.selector, RESULT));
        this.settleAgain(t, h);
    }

    function settleAgain(bytes32[] memory t, Verinfer.Hold[] memory h) external {
        settleTo(2, t, h);
    }

    function test_holds_must_balance_the_transfers() public {
        Verinfer.Hold[] memory h = holdOf(WINDOW);
        bytes32[] memory t = t1(alice, -1 ether);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.Unbalanced.selector, int256(uint256(FEE)) - 1 ether));
        this.settleAgain(t, h);
    }

    // ---------------------------------------------------------------- vaults

    function test_a_vault_is_claimed_to_the_linked_address_on_a_quorum() public {
        bytes32 account = keccak256("ed25519 publisher");
        address vlt = v.vault(account);
        settleTo(1, t2(alice, -30 ether, vlt, 30 ether));
        assertEq(balanceOf(vlt), 30 ether, "the share waits in the vault");
        bytes memory two = sign(firstKeys(2), v.claimDigest(account, bob));
        vm.expectRevert(abi.encodeWithSelector(Verinfer.QuorumNotMet.selector, 2, 3));
        v.claim(account, bob, two);
        // Signatures for another address move nothing.
        bytes memory forAlice = sign(firstKeys(3), v.claimDigest(account, alice));
        vm.expectPartialRevert(Verinfer.NotVerifier.selector);
        v.claim(account, bob, forAlice);
        v.claim(account, bob, sign(firstKeys(3), v.claimDigest(account, bob)));
        assertEq(balanceOf(bob), 30 ether, "claimed");
        assertEq(balanceOf(vlt), 0, "vault emptied");
        assertConserved();
    }
}
