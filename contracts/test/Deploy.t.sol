// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {MockToken} from "./utils/Mocks.sol";
import {IERC20} from "../src/IERC20.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Construction checks and the token plumbing (any ERC-20).
contract DeployTest is Fixture {
    function deployWith(Verinfer.Params memory p) internal returns (Verinfer) {
        return new Verinfer(IERC20(address(token)), p, defaultModels());
    }

    function test_constructor_state() public view {
        assertEq(address(v.token()), address(token), "token");
        assertEq(v.settledSize(), 0, "size 0");
        assertEq(v.settledRoot(), sha256(""), "empty-tree root");
        assertEq(abi.encode(currentParams()), abi.encode(defaultParams()), "params");
    }

    function test_revert_InvalidParam_token_without_code() public {
        Verinfer.Params memory p = defaultParams();
        Verinfer.InitialModel[] memory m = defaultModels();
        vm.expectRevert(Verinfer.InvalidParam.selector);
        new Verinfer(IERC20(address(0x1234)), p, m);
    }

    function test_revert_InvalidParam_constructor_params() public {
        Verinfer.Params memory p;
        Verinfer.Params[3] memory bad;
        for (uint256 i; i < 3; ++i) {
            bad[i] = defaultParams();
        }
        bad[0].feeTreasuryBps = 0; // split no longer sums to 10000
        bad[1].unbondDelay = bad[1].votingPeriod - 1;
        bad[2].treasury = address(0);
        for (uint256 i; i < 3; ++i) {
            p = bad[i];
            vm.expectRevert(Verinfer.InvalidParam.selector);
            deployWith(p);
        }
    }

    function test_revert_OutOfBounds_constructor_params() public {
        Verinfer.Params memory p = defaultParams();
        p.minStake = 0;
        expectOutOfBounds(p, 0, 0, 1 ether, 1e9 ether);
        p = defaultParams();
        p.quorum = 0;
        expectOutOfBounds(p, 1, 0, 1, 32);
        p = defaultParams();
        p.slashQuorum = 33;
        expectOutOfBounds(p, 2, 33, 1, 32);
        p = defaultParams();
        p.slashBps = 10_001;
        expectOutOfBounds(p, 3, 10_001, 100, 10_000);
        p = defaultParams();
        p.slashRewardBps = 10_001;
        expectOutOfBounds(p, 4, 10_001, 0, 10_000);
        p = defaultParams();
        p.votingPeriod = 0;
        expectOutOfBounds(p, 8, 0, 1 hours, 30 days);
        p = defaultParams();
        p.unbondDelay = type(uint32).max;
        expectOutOfBounds(p, 6, type(uint32).max, 1 hours, 90 days);
    }

    function expectOutOfBounds(Verinfer.Params memory p, uint8 param, uint256 value, uint256 min, uint256 max)
        internal
    {
        vm.expectRevert(abi.encodeWithSelector(Verinfer.OutOfBounds.selector, param, value, min, max));
        deployWith(p);
    }

    function mockSetup(uint8 mode) internal returns (MockToken t, Verinfer w) {
        t = new MockToken(1000 ether, 0);
        w = new Verinfer(IERC20(address(t)), defaultParams(), defaultModels());
        t.approve(address(w), type(uint256).max);
        t.setMode(mode);
    }

    function test_token_returning_nothing_works() public {
        (MockToken t, Verinfer w) = mockSetup(1);
        w.deposit(address(this), 10 ether);
        w.requestWithdrawal(10 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        w.withdraw();
        assertEq(t.balanceOf(address(this)), 1000 ether, "round trip");
    }

    function test_revert_TokenTransferFailed_pull() public {
        (, Verinfer w) = mockSetup(2);
        vm.expectRevert(Verinfer.TokenTransferFailed.selector);
        w.deposit(address(this), 10 ether);
    }

    function test_revert_TokenTransferFailed_push() public {
        (MockToken t, Verinfer w) = mockSetup(0);
        w.deposit(address(this), 10 ether);
        w.requestWithdrawal(10 ether);
        vm.warp(block.timestamp + WITHDRAW_DELAY);
        t.setMode(3);
        vm.expectRevert(Verinfer.TokenTransferFailed.selector);
        w.withdraw();
    }
}
