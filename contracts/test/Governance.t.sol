// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Stake-weighted governance of the parameters. Fixture stake: four verifiers
/// and one inference node with 100 each (500 in all): a proposal passes with
/// more than 250 in favour.
contract GovernanceTest is Fixture {
    bytes32 constant NEW_MODEL = keccak256("another model");

    function propose(uint8 param, bytes32 key, uint256 value) internal returns (uint256) {
        vm.prank(vaddrs[0]);
        return v.propose(param, key, value);
    }

    function voteBy(address who, uint256 id, bool support) internal {
        vm.prank(who);
        v.vote(id, support);
    }

    function pass(uint8 param, bytes32 key, uint256 value) internal returns (uint256 id) {
        id = propose(param, key, value);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true);
        voteBy(vaddrs[2], id, true);
        vm.warp(block.timestamp + VOTING_PERIOD);
        v.execute(id);
    }

    function expectProposeRevert(uint8 param, bytes32 key, uint256 value) internal {
        vm.prank(vaddrs[0]);
        vm.expectRevert(Verinfer.InvalidParam.selector);
        v.propose(param, key, value);
    }

    // ------------------------------------------------------- happy paths

    function test_proposal_lifecycle_records_votes() public {
        uint256 id = propose(v.P_QUORUM(), 0, 2);
        assertEq(id, 1, "first id");
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, false);
        voteBy(node, id, true);
        (uint8 param, uint40 deadline, uint40 expiresAt, bool executed, uint128 total, uint128 yes, uint128 no,,) =
            v.proposals(id);
        assertEq(param, 1, "param");
        assertEq(deadline, block.timestamp + VOTING_PERIOD, "deadline");
        assertEq(expiresAt, block.timestamp + 2 * uint256(VOTING_PERIOD), "expiry");
        assertFalse(executed, "not executed");
        assertEq(total, 5 * MIN_STAKE, "total stake snapshot");
        assertEq(yes, 2 * MIN_STAKE, "yes weight");
        assertEq(no, MIN_STAKE, "no weight");
        assertTrue(v.voted(id, vaddrs[1]), "voted");
    }

    function test_execute_min_stake() public {
        pass(v.P_MIN_STAKE(), 0, 50 ether);
        assertEq(currentParams().minStake, 50 ether, "minStake");
    }

    function test_execute_quorum() public {
        pass(v.P_QUORUM(), 0, 2);
        assertEq(currentParams().quorum, 2, "quorum");
        // Two signatures now settle a checkpoint.
        bytes32[] memory none;
        bytes32 root = sha256(abi.encodePacked(bytes1(0), "x"));
        bytes memory sigs = checkpointSigs(firstKeys(2), 0, 1, v.EMPTY_ROOT(), root, none);
        v.settle(0, 1, root, none, none, noHolds, sigs);
        assertEq(v.settledSize(), 1, "settled with two");
    }

    function test_execute_slash_quorum() public {
        pass(v.P_SLASH_QUORUM(), 0, 4);
        assertEq(currentParams().slashQuorum, 4, "slashQuorum");
    }

    function test_execute_slash_bps() public {
        pass(v.P_SLASH_BPS(), 0, 10_000);
        assertEq(currentParams().slashBps, 10_000, "slashBps");
    }

    function test_execute_slash_reward_bps() public {
        pass(v.P_SLASH_REWARD_BPS(), 0, 2500);
        assertEq(currentParams().slashRewardBps, 2500, "slashRewardBps");
    }

    function test_execute_fee_split() public {
        pass(v.P_FEE_SPLIT(), 0, (6000 << 32) | (3000 << 16) | 1000);
        Verinfer.Params memory p = currentParams();
        assertEq(p.feeInferenceBps, 6000, "inference");
        assertEq(p.feeVerifierBps, 3000, "verifier");
        assertEq(p.feeTreasuryBps, 1000, "treasury");
    }

    function test_execute_unbond_delay() public {
        pass(v.P_UNBOND_DELAY(), 0, 30 days);
        assertEq(currentParams().unbondDelay, 30 days, "unbondDelay");
    }

    function test_execute_withdraw_delay() public {
        pass(v.P_WITHDRAW_DELAY(), 0, 2 hours);
        assertEq(currentParams().withdrawDelay, 2 hours, "withdrawDelay");
    }

    function test_execute_voting_period() public {
        pass(v.P_VOTING_PERIOD(), 0, 1 days);
        assertEq(currentParams().votingPeriod, 1 days, "votingPeriod");
    }

    function test_execute_treasury() public {
        address t = address(0x7777);
        pass(v.P_TREASURY(), 0, uint160(t));
        assertEq(currentParams().treasury, t, "treasury");
    }

    function test_execute_model_admit_and_remove() public {
        pass(v.P_MODEL_ADMIT(), NEW_MODEL, (uint256(3e12) << 128) | 5e12);
        (bool admitted, uint128 priceIn, uint128 priceOut) = v.models(NEW_MODEL);
        assertTrue(admitted, "admitted");
        assertEq(priceIn, 3e12, "price in");
        assertEq(priceOut, 5e12, "price out");
        // Re-admitting changes the prices.
        pass(v.P_MODEL_ADMIT(), NEW_MODEL, (uint256(4e12) << 128) | 6e12);
        (, priceIn, priceOut) = v.models(NEW_MODEL);
        assertEq(priceIn, 4e12, "new price in");
        pass(v.P_MODEL_REMOVE(), NEW_MODEL, 0);
        (admitted,,) = v.models(NEW_MODEL);
        assertFalse(admitted, "removed");
    }

    function test_initial_model_admitted() public view {
        (bool admitted, uint128 priceIn, uint128 priceOut) = v.models(MODEL);
        assertTrue(admitted, "admitted at deployment");
        assertEq(priceIn, 1e12, "in");
        assertEq(priceOut, 2e12, "out");
    }

    function test_weight_is_stake_at_creation() public {
        uint256 id = propose(v.P_QUORUM(), 0, 2);
        fund(vaddrs[0], 300 ether);
        vm.prank(vaddrs[0]);
        v.stake(300 ether); // staked after creation: adds no weight
        voteBy(vaddrs[0], id, true);
        (,,,, uint128 total, uint128 yes,,,) = v.proposals(id);
        assertEq(yes, 100 ether, "weight at creation");
        assertEq(total, 500 ether, "threshold is the stake at creation");
        assertEq(v.stakeAt(vaddrs[0], id), 100 ether, "snapshot");
        assertEq(v.stakeAt(vaddrs[0], id + 1), 400 ether, "a later proposal sees the new stake");
        vm.warp(block.timestamp + VOTING_PERIOD);
        vm.expectRevert(Verinfer.NotPassed.selector);
        v.execute(id);
    }

    /// A slash after the snapshot lowers the weight: min(snapshot, now).
    function test_slash_after_creation_lowers_weight() public {
        uint256 id = propose(v.P_QUORUM(), 0, 2);
        v.slash(node, keccak256("r"), keccak256("reason"), anchor(), slashSigs(firstKeys(3), node, keccak256("r"), keccak256("reason")));
        (uint256 left,) = stakeOf(node);
        assertEq(left, MIN_STAKE / 2, "half slashed");
        voteBy(node, id, true);
        (,,,,, uint128 yes,,,) = v.proposals(id);
        assertEq(yes, MIN_STAKE / 2, "weight is what is left");
    }

    /// Stake that voted cannot move to a second address and vote again: it
    /// stays bonded until the vote ends, and stake bonded after the proposal
    /// has no weight in it.
    function test_stake_cannot_vote_twice() public {
        uint256 id = propose(v.P_QUORUM(), 0, 2);
        voteBy(vaddrs[0], id, true);
        (, uint40 deadline,,,,,,,) = v.proposals(id);
        assertEq(v.voteLockedUntil(vaddrs[0]), deadline, "locked until the vote ends");
        vm.prank(vaddrs[0]);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.StakeLocked.selector, uint64(deadline)));
        v.unbond(MIN_STAKE);
        // Fresh stake on another address counts nothing in this vote.
        address second = address(0x5EC0);
        registerNode(second, 1, 400 ether);
        vm.prank(second);
        vm.expectRevert(Verinfer.NotStaker.selector);
        v.vote(id, true);
        // Once the vote ended, the stake can leave.
        vm.warp(deadline);
        vm.prank(vaddrs[0]);
        v.unbond(MIN_STAKE);
        (, uint256 unbonding) = stakeOf(vaddrs[0]);
        assertEq(unbonding, MIN_STAKE, "unbonding after the vote");
    }

    function test_anyone_executes() public {
        uint256 id = propose(v.P_QUORUM(), 0, 2);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true);
        voteBy(vaddrs[2], id, true);
        vm.warp(block.timestamp + VOTING_PERIOD);
        vm.prank(address(0xABC));
        v.execute(id);
        assertEq(currentParams().quorum, 2, "executed");
    }

    // ------------------------------------------------------------ reverts

    function test_revert_NotStaker_propose_unregistered() public {
        vm.prank(alice);
        vm.expectRevert(Verinfer.NotStaker.selector);
        v.propose(1, 0, 2);
    }

    function test_revert_NotStaker_propose_below_minimum() public {
        vm.prank(node);
        v.unbond(MIN_STAKE);
        vm.prank(node);
        vm.expectRevert(Verinfer.NotStaker.selector);
        v.propose(1, 0, 2);
    }

    function test_revert_NotStaker_vote() public {
        uint256 id = propose(1, 0, 2);
        vm.prank(alice);
        vm.expectRevert(Verinfer.NotStaker.selector);
        v.vote(id, true);
    }

    function test_revert_UnknownProposal_vote() public {
        vm.prank(vaddrs[0]);
        vm.expectRevert(Verinfer.UnknownProposal.selector);
        v.vote(1, true);
    }

    function test_revert_UnknownProposal_execute() public {
        vm.expectRevert(Verinfer.UnknownProposal.selector);
        v.execute(0);
    }

    function test_revert_VotingClosed() public {
        uint256 id = propose(1, 0, 2);
        vm.warp(block.timestamp + VOTING_PERIOD);
        vm.prank(vaddrs[0]);
        vm.expectRevert(Verinfer.VotingClosed.selector);
        v.vote(id, true);
    }

    function test_revert_AlreadyVoted() public {
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true);
        vm.prank(vaddrs[0]);
        vm.expectRevert(Verinfer.AlreadyVoted.selector);
        v.vote(id, false);
    }

    function test_revert_VotingOpen() public {
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true);
        voteBy(vaddrs[2], id, true);
        vm.warp(block.timestamp + VOTING_PERIOD - 1);
        vm.expectRevert(Verinfer.VotingOpen.selector);
        v.execute(id);
    }

    function test_revert_AlreadyExecuted() public {
        uint256 id = pass(1, 0, 2);
        vm.expectRevert(Verinfer.AlreadyExecuted.selector);
        v.execute(id);
    }

    function test_revert_ProposalExpired() public {
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true);
        voteBy(vaddrs[2], id, true);
        vm.warp(block.timestamp + 2 * uint256(VOTING_PERIOD));
        vm.expectRevert(Verinfer.ProposalExpired.selector);
        v.execute(id);
    }

    function test_revert_NotPassed_no_majority_of_total_stake() public {
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true); // 200 of 500, no one against
        vm.warp(block.timestamp + VOTING_PERIOD);
        vm.expectRevert(Verinfer.NotPassed.selector);
        v.execute(id);
    }

    function test_revert_NotPassed_exactly_half() public {
        fund(vaddrs[0], 50 ether);
        vm.prank(vaddrs[0]);
        v.stake(50 ether); // total 550, half = 275
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true); // 150
        voteBy(vaddrs[1], id, true); // 250
        vm.warp(block.timestamp + VOTING_PERIOD);
        vm.expectRevert(Verinfer.NotPassed.selector);
        v.execute(id);
    }

    function test_revert_NotPassed_more_no_than_yes() public {
        address whale = address(0x3A1E);
        registerNode(whale, 1, 400 ether); // total 900, half = 450
        uint256 id = propose(1, 0, 2);
        voteBy(vaddrs[0], id, true);
        voteBy(vaddrs[1], id, true);
        voteBy(vaddrs[2], id, true);
        voteBy(vaddrs[3], id, true);
        voteBy(node, id, true); // 500 yes
        voteBy(whale, id, false); // 400 no
        vm.warp(block.timestamp + VOTING_PERIOD);
        v.execute(id); // yes beats half and the no votes
        assertEq(currentParams().quorum, 2, "passed");
    }

    function test_revert_InvalidParam_unknown_param() public {
        expectProposeRevert(12, 0, 1);
        expectProposeRevert(255, 0, 1);
    }

    function test_revert_InvalidParam_key_on_plain_param() public {
        expectProposeRevert(v.P_QUORUM(), bytes32(uint256(1)), 2);
    }

    function test_revert_InvalidParam_value_too_wide() public {
        expectProposeRevert(v.P_MIN_STAKE(), 0, uint256(type(uint128).max) + 1);
        expectProposeRevert(v.P_QUORUM(), 0, 1 << 16);
        expectProposeRevert(v.P_SLASH_QUORUM(), 0, 1 << 16);
        expectProposeRevert(v.P_SLASH_BPS(), 0, 1 << 16);
        expectProposeRevert(v.P_SLASH_REWARD_BPS(), 0, 1 << 16);
        expectProposeRevert(v.P_FEE_SPLIT(), 0, (uint256(1) << 48) | (7000 << 32) | (2000 << 16) | 1000);
        expectProposeRevert(v.P_UNBOND_DELAY(), 0, 1 << 32);
        expectProposeRevert(v.P_WITHDRAW_DELAY(), 0, 1 << 32);
        expectProposeRevert(v.P_VOTING_PERIOD(), 0, 1 << 32);
        expectProposeRevert(v.P_TREASURY(), 0, 1 << 160);
    }

    function test_revert_InvalidParam_out_of_range() public {
        expectProposeRevert(v.P_FEE_SPLIT(), 0, (7000 << 32) | (2000 << 16) | 999);
        expectProposeRevert(v.P_FEE_SPLIT(), 0, (7000 << 32) | (2000 << 16) | 1001);
        expectProposeRevert(v.P_UNBOND_DELAY(), 0, VOTING_PERIOD - 1); // shorter than a vote
        expectProposeRevert(v.P_VOTING_PERIOD(), 0, UNBOND_DELAY + 1); // longer than unbonding
        expectProposeRevert(v.P_TREASURY(), 0, 0);
    }

    function expectOutOfBounds(uint8 param, uint256 value) internal {
        (uint256 min, uint256 max) = v.paramBounds(param);
        vm.prank(vaddrs[0]);
        vm.expectRevert(abi.encodeWithSelector(Verinfer.OutOfBounds.selector, param, value, min, max));
        v.propose(param, 0, value);
    }

    /// Every governed number has bounds no vote can cross.
    function test_revert_OutOfBounds() public {
        expectOutOfBounds(v.P_MIN_STAKE(), 0);
        expectOutOfBounds(v.P_MIN_STAKE(), 1e9 ether + 1);
        expectOutOfBounds(v.P_QUORUM(), 0);
        expectOutOfBounds(v.P_QUORUM(), 33);
        expectOutOfBounds(v.P_SLASH_QUORUM(), 0);
        expectOutOfBounds(v.P_SLASH_BPS(), 0);
        expectOutOfBounds(v.P_SLASH_BPS(), 10_001);
        expectOutOfBounds(v.P_SLASH_REWARD_BPS(), 10_001);
        expectOutOfBounds(v.P_UNBOND_DELAY(), type(uint32).max);
        expectOutOfBounds(v.P_WITHDRAW_DELAY(), 0);
        expectOutOfBounds(v.P_VOTING_PERIOD(), 0);
        expectOutOfBounds(v.P_VOTING_PERIOD(), 31 days);
    }

    function test_revert_InvalidParam_models() public {
        expectProposeRevert(v.P_MODEL_ADMIT(), 0, 1); // no model id
        expectProposeRevert(v.P_MODEL_REMOVE(), NEW_MODEL, 0); // not admitted
        expectProposeRevert(v.P_MODEL_REMOVE(), MODEL, 1); // value must be 0
    }

    /// Validated again at execution: the state may have changed since.
    function test_revert_InvalidParam_at_execution() public {
        uint256 a = propose(v.P_MODEL_REMOVE(), MODEL, 0);
        uint256 b = propose(v.P_MODEL_REMOVE(), MODEL, 0);
        uint256 c = propose(v.P_VOTING_PERIOD(), 0, 10 days);
        uint256 d = propose(v.P_UNBOND_DELAY(), 0, 5 days);
        uint256[4] memory ids = [a, b, c, d];
        for (uint256 i; i < 4; ++i) {
            voteBy(vaddrs[0], ids[i], true);
            voteBy(vaddrs[1], ids[i], true);
            voteBy(vaddrs[2], ids[i], true);
        }
        vm.warp(block.timestamp + VOTING_PERIOD);
        v.execute(a);
        vm.expectRevert(Verinfer.InvalidParam.selector);
        v.execute(b); // already removed
        v.execute(c); // voting period 10 days <= unbond delay 14 days
        vm.expectRevert(Verinfer.InvalidParam.selector);
        v.execute(d); // unbond delay 5 days would now be shorter than a vote
    }
}
