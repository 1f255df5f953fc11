// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {Verinfer} from "../src/Verinfer.sol";
import {VerinferToken} from "../src/VerinferToken.sol";

/// Escrow: deposit, delayed withdrawal, and its interplay with settlement.
contract EscrowTest is Fixture {
    function test_deposit_for_self_and_for_another_account() public {
        depositFor(alice, 10 ether);
        assertEq(balanceOf(alice), 10 ether, "alice");
        token.approve(address(v), 3 ether);
        v.deposit(bob, 3 ether);
        assertEq(balanceOf(bob), 3 ether, "bob credited by a third party");
        (uint256 e,,) = v.totals();
        assertEq(e, 13 ether, "escrow total");
        assertConserved();
    }

    function test_withdraw_after_delay() public {
        depositFor(alice, 10 ether);
        vm.prank(alice);
        v.requestWithdrawal(4 ether);
        (uint128 bal, uint128 pending, uint64 unlockAt) = v.accounts(alice);
        assertEq(bal, 10 ether, "balance unchanged by the request");
        assertEq(pending, 4 ether, "pending");
        assertEq(unlockAt, block.timestamp + WITHDRAW_DELAY, "unlockAt");
        vm.warp(unlockAt);
        vm.prank(alice);
        v.withdraw();
        assertEq(token.balanceOf(alice), 4 ether, "paid");
        (bal, pending, unlockAt) = v.accounts(alice);
        assertEq(bal, 6 ether, "left");
        assertEq(pending, 0, "request cleared");
        assertConserved();
    }

    function test_cancel_withdrawal() public {
        depositFor(alice, 10 ether);
        vm.prank(alice);
        v.requestWithdrawal(4 ether);
        vm.prank(alice);
        v.cancelWithdrawal();
        (, uint128 pending,) = v.accounts(alice);
        assertEq(pending, 0, "cancelled");
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(alice);
        vm.expectRevert(Verinfer.NoPendingWithdrawal.selector);
        v.withdraw();
    }

    /// A settlement during the delay debits the deposit; the withdrawal then
    /// pays only what is left: the same tokens are never spent and withdrawn.
    function test_pending_withdrawal_cannot_double_spend() public {
        depositFor(alice, 10 ether);
        vm.prank(alice);
        v.requestWithdrawal(10 ether);
        settleTo(5, t2(alice, -3 ether, node, 3 ether));
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(alice);
        v.withdraw();
        assertEq(token.balanceOf(alice), 7 ether, "paid what was left");
        assertEq(balanceOf(alice), 0, "nothing left");
        assertEq(balanceOf(node), 3 ether, "node keeps its fee");
        assertConserved();
    }

    function test_withdraw_pays_zero_when_all_spent() public {
        depositFor(alice, 3 ether);
        vm.prank(alice);
        v.requestWithdrawal(3 ether);
        settleTo(1, t2(alice, -3 ether, node, 3 ether));
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        vm.prank(alice);
        v.withdraw();
        assertEq(token.balanceOf(alice), 0, "nothing paid");
        (, uint128 pending,) = v.accounts(alice);
        assertEq(pending, 0, "request cleared");
        assertConserved();
    }

    function test_new_request_replaces_old_and_restarts_delay() public {
        depositFor(alice, 10 ether);
        vm.prank(alice);
        v.requestWithdrawal(1 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY - 1);
        vm.prank(alice);
        v.requestWithdrawal(2 ether);
        vm.warp(block.timestamp + 1);
        vm.prank(alice);
        vm.expectRevert(
            abi.encodeWithSelector(Verinfer.StillLocked.selector, uint64(block.timestamp - 1 + WITHDRAW_DELAY))
        );
        v.withdraw();
    }

    // ------------------------------------------------------------ reverts

    function test_revert_ZeroAddress_deposit() public {
        fund(alice, 1 ether);
        vm.prank(alice);
        vm.expectRevert(Verinfer.ZeroAddress.selector);
        v.deposit(address(0), 1 ether);
    }

    function test_revert_ZeroAmount_deposit() public {
        vm.prank(alice);
        vm.expectRevert(Verinfer.ZeroAmount.selector);
        v.deposit(alice, 0);
    }

    function test_revert_ZeroAmount_requestWithdrawal() public {
        vm.prank(alice);
        vm.expectRevert(Verinfer.ZeroAmount.selector);
        v.requestWithdrawal(0);
    }

    function test_revert_InsufficientBalance_requestWithdrawal() public {
        depositFor(alice, 1 ether);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.InsufficientBalance.selector, alice, 1 ether, 2 ether));
        v.requestWithdrawal(2 ether);
    }

    function test_revert_NoPendingWithdrawal_cancel() public {
        vm.prank(alice);
        vm.expectRevert(Verinfer.NoPendingWithdrawal.selector);
        v.cancelWithdrawal();
    }

    function test_revert_NoPendingWithdrawal_withdraw() public {
        depositFor(alice, 1 ether);
        vm.prank(alice);
        vm.expectRevert(Verinfer.NoPendingWithdrawal.selector);
        v.withdraw();
    }

    function test_revert_StillLocked_withdraw() public {
        depositFor(alice, 1 ether);
        vm.prank(alice);
        v.requestWithdrawal(1 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY - 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StillLocked.selector, uint64(block.timestamp + 1)));
        v.withdraw();
    }

    function test_revert_AmountTooLarge_deposit() public {
        VerinferToken big = new VerinferToken(type(uint256).max);
        Verinfer w = new Verinfer(big, defaultParams(), defaultModels());
        big.approve(address(w), type(uint256).max);
        w.deposit(alice, type(uint128).max);
        vm.expectRevert(Verinfer.AmountTooLarge.selector);
        w.deposit(bob, 1);
    }

    function test_revert_deposit_without_balance_bubbles_token_error() public {
        vm.startPrank(alice);
        token.approve(address(v), 1 ether);
        vm.expectRevert(abi.encodeWithSelector(VerinferToken.ERC20InsufficientBalance.selector, alice, 0, 1 ether));
        v.deposit(alice, 1 ether);
        vm.stopPrank();
    }
}
