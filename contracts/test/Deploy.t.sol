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
        Verinfer.Params[9] memory bad;
        for (uint256 i; i < 9; ++i) {
            bad[i] = defaultParams();
        }
        bad[0].minStake = 0;
        bad[1].quorum = 0;
        bad[2].slashQuorum = 0;
        bad[3].slashBps = 10_001;
        bad[4].slashRewardBps = 10_001;
        bad[5].feeTreasuryBps = 0; // split no longer sums to 10000
        bad[6].votingPeriod = 0;
        bad[7].unbondDelay = bad[7].votingPeriod - 1;
        bad[8].treasury = address(0);
        for (uint256 i; i < 9; ++i) {
            p = bad[i];
            vm.expectRevert(Verinfer.InvalidParam.selector);
            deployWith(p);
        }
    }

    function test_revert_InvalidParam_zero_model_id() public {
        Verinfer.Params memory p = defaultParams();
        Verinfer.InitialModel[] memory m = new Verinfer.InitialModel[](1);
        vm.expectRevert(Verinfer.InvalidParam.selector);
        new Verinfer(IERC20(address(token)), p, m);
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
