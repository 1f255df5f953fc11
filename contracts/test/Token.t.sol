// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {VerinferToken} from "../src/VerinferToken.sol";

contract TokenTest is Test {
    VerinferToken t;
    address a = address(0xA);
    address b = address(0xB);

    function setUp() public {
        t = new VerinferToken(1000 ether);
    }

    function test_metadata_and_supply_minted_to_deployer() public view {
        assertEq(t.name(), "verinfer network token", "name");
        assertEq(t.symbol(), "VNT", "symbol");
        assertEq(t.decimals(), 18, "decimals");
        assertEq(t.totalSupply(), 1000 ether, "supply");
        assertEq(t.balanceOf(address(this)), 1000 ether, "deployer balance");
    }

    function test_transfer_and_transferFrom() public {
        assertTrue(t.transfer(a, 10 ether), "transfer returns true");
        assertEq(t.balanceOf(a), 10 ether, "a");
        vm.prank(a);
        t.approve(address(this), 4 ether);
        assertTrue(t.transferFrom(a, b, 3 ether), "transferFrom returns true");
        assertEq(t.allowance(a, address(this)), 1 ether, "allowance decreased");
        assertEq(t.balanceOf(b), 3 ether, "b");
        assertEq(t.balanceOf(a), 7 ether, "a after");
    }

    function test_infinite_allowance_is_not_decreased() public {
        t.transfer(a, 10 ether);
        vm.prank(a);
        t.approve(address(this), type(uint256).max);
        t.transferFrom(a, b, 3 ether);
        assertEq(t.allowance(a, address(this)), type(uint256).max, "still infinite");
    }

    function test_revert_ERC20InsufficientBalance() public {
        vm.prank(a);
        vm.expectRevert(abi.encodeWithSelector(VerinferToken.ERC20InsufficientBalance.selector, a, 0, 1));
        t.transfer(b, 1);
    }

    function test_revert_ERC20InsufficientAllowance() public {
        t.transfer(a, 10 ether);
        vm.prank(a);
        t.approve(address(this), 1 ether);
        vm.expectRevert(
            abi.encodeWithSelector(VerinferToken.ERC20InsufficientAllowance.selector, address(this), 1 ether, 2 ether)
        );
        t.transferFrom(a, b, 2 ether);
    }

    function test_revert_ERC20InvalidReceiver() public {
        vm.expectRevert(abi.encodeWithSelector(VerinferToken.ERC20InvalidReceiver.selector, address(0)));
        t.transfer(address(0), 1);
    }
}
