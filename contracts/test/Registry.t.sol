// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {Verinfer} from "../src/Verinfer.sol";
import {VerinferToken} from "../src/VerinferToken.sol";

/// Registry and staking: register, endpoint, stake, unbond, withdraw.
contract RegistryTest is Fixture {
    address carol = address(0xCA401);
    bytes32 constant KEY = bytes32(uint256(0xED25519));

    function test_register_records_node_and_pulls_stake() public {
        fund(carol, 150 ether);
        vm.prank(carol);
        v.register(2, KEY, "https://carol.example:8443", 150 ether);
        (uint128 s, uint64 unbondAt, uint8 role, uint128 unbonding, bytes32 k, string memory ep) = v.nodes(carol);
        assertEq(s, 150 ether, "stake");
        assertEq(unbondAt, 0, "unbondAt");
        assertEq(role, 2, "role");
        assertEq(unbonding, 0, "unbonding");
        assertEq(k, KEY, "node key");
        assertEq(ep, "https://carol.example:8443", "endpoint");
        assertEq(v.nodeByKey(KEY), carol, "nodeByKey");
        assertEq(token.balanceOf(carol), 0, "tokens pulled");
        assertTrue(v.isActiveVerifier(carol), "active verifier");
        assertFalse(v.isActiveVerifier(node), "inference node is not a verifier");
        assertConserved();
    }

    function test_setEndpoint() public {
        vm.prank(node);
        v.setEndpoint("http://moved");
        (,,,,, string memory ep) = v.nodes(node);
        assertEq(ep, "http://moved", "endpoint");
    }

    function test_stake_adds() public {
        fund(node, 5 ether);
        vm.prank(node);
        v.stake(5 ether);
        (uint256 s,) = stakeOf(node);
        assertEq(s, MIN_STAKE + 5 ether, "stake");
        assertConserved();
    }

    function test_unbond_partial_then_withdraw_after_delay() public {
        fund(node, 50 ether);
        vm.prank(node);
        v.stake(50 ether);
        vm.prank(node);
        v.unbond(50 ether);
        (uint256 s, uint256 u) = stakeOf(node);
        assertEq(s, MIN_STAKE, "bonded");
        assertEq(u, 50 ether, "unbonding");
        assertConserved();
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.prank(node);
        v.withdrawUnbonded();
        assertEq(token.balanceOf(node), 50 ether, "paid out");
        (, u) = stakeOf(node);
        assertEq(u, 0, "unbonding cleared");
        assertConserved();
    }

    function test_unbond_all_deactivates_verifier() public {
        address ver = vaddrs[0];
        vm.prank(ver);
        v.unbond(MIN_STAKE);
        assertFalse(v.isActiveVerifier(ver), "inactive");
        vm.warp(block.timestamp + UNBOND_DELAY);
        vm.prank(ver);
        v.withdrawUnbonded();
        assertEq(token.balanceOf(ver), MIN_STAKE, "paid");
        assertConserved();
    }

    function test_second_unbond_restarts_delay() public {
        fund(node, 20 ether);
        vm.prank(node);
        v.stake(20 ether);
        vm.prank(node);
        v.unbond(10 ether);
        vm.warp(block.timestamp + UNBOND_DELAY - 1);
        vm.prank(node);
        v.unbond(10 ether);
        vm.warp(block.timestamp + 1);
        uint64 unlockAt = uint64(block.timestamp - 1 + UNBOND_DELAY);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StillLocked.selector, unlockAt));
        v.withdrawUnbonded();
    }

    // ------------------------------------------------------------ reverts

    function test_revert_InvalidRole() public {
        fund(carol, MIN_STAKE);
        vm.startPrank(carol);
        vm.expectRevert(Verinfer.InvalidRole.selector);
        v.register(0, KEY, "", MIN_STAKE);
        vm.expectRevert(Verinfer.InvalidRole.selector);
        v.register(3, KEY, "", MIN_STAKE);
        vm.stopPrank();
    }

    function test_revert_AlreadyRegistered() public {
        fund(node, MIN_STAKE);
        vm.prank(node);
        vm.expectRevert(Verinfer.AlreadyRegistered.selector);
        v.register(1, KEY, "", MIN_STAKE);
    }

    function test_revert_InvalidNodeKey() public {
        fund(carol, MIN_STAKE);
        vm.prank(carol);
        vm.expectRevert(Verinfer.InvalidNodeKey.selector);
        v.register(1, bytes32(0), "", MIN_STAKE);
    }

    function test_revert_NodeKeyTaken() public {
        fund(carol, MIN_STAKE);
        (,,,, bytes32 taken,) = v.nodes(node);
        vm.prank(carol);
        vm.expectRevert(Verinfer.NodeKeyTaken.selector);
        v.register(1, taken, "", MIN_STAKE);
    }

    function test_revert_StakeBelowMinimum_register() public {
        fund(carol, MIN_STAKE);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StakeBelowMinimum.selector, MIN_STAKE - 1, MIN_STAKE));
        v.register(1, KEY, "", MIN_STAKE - 1);
    }

    function test_revert_StakeBelowMinimum_unbond_leaves_dust() public {
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StakeBelowMinimum.selector, 1, MIN_STAKE));
        v.unbond(MIN_STAKE - 1);
    }

    function test_revert_register_without_allowance_bubbles_token_error() public {
        token.transfer(carol, MIN_STAKE);
        vm.prank(carol);
        vm.expectRevert(
            abi.encodeWithSelector(VerinferToken.ERC20InsufficientAllowance.selector, address(v), 0, MIN_STAKE)
        );
        v.register(1, KEY, "", MIN_STAKE);
    }

    function test_revert_NotRegistered_setEndpoint() public {
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NotRegistered.selector, carol));
        v.setEndpoint("x");
    }

    function test_revert_NotRegistered_stake() public {
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NotRegistered.selector, carol));
        v.stake(1);
    }

    function test_revert_NotRegistered_unbond() public {
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.NotRegistered.selector, carol));
        v.unbond(1);
    }

    function test_revert_ZeroAmount_stake() public {
        vm.prank(node);
        vm.expectRevert(Verinfer.ZeroAmount.selector);
        v.stake(0);
    }

    function test_revert_ZeroAmount_unbond() public {
        vm.prank(node);
        vm.expectRevert(Verinfer.ZeroAmount.selector);
        v.unbond(0);
    }

    function test_revert_InsufficientStake() public {
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.InsufficientStake.selector, MIN_STAKE, MIN_STAKE + 1));
        v.unbond(MIN_STAKE + 1);
    }

    function test_revert_NothingUnbonding() public {
        vm.prank(node);
        vm.expectRevert(Verinfer.NothingUnbonding.selector);
        v.withdrawUnbonded();
    }

    function test_revert_StillLocked_withdrawUnbonded() public {
        vm.prank(node);
        v.unbond(MIN_STAKE);
        vm.warp(block.timestamp + UNBOND_DELAY - 1);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StillLocked.selector, uint64(block.timestamp + 1)));
        v.withdrawUnbonded();
    }

    function test_revert_AmountTooLarge_register_and_stake() public {
        // A token with a supply beyond uint128 to reach the cap.
        VerinferToken big = new VerinferToken(type(uint256).max);
        Verinfer w = new Verinfer(big, defaultParams(), defaultModels());
        big.approve(address(w), type(uint256).max);
        vm.expectRevert(Verinfer.AmountTooLarge.selector);
        w.register(1, KEY, "", uint256(type(uint128).max) + 1);
        w.register(1, KEY, "", type(uint128).max);
        vm.expectRevert(Verinfer.AmountTooLarge.selector);
        w.stake(1);
    }
}
