// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {MerkleGen} from "./utils/MerkleGen.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Conservation of the token total across random sequences of every
/// operation that moves value: after each step the contract holds exactly
/// the deposits and stakes it took in, less what it paid out; its totals
/// equal the sums of the individual balances and stakes; and no token is
/// created or lost anywhere (the supply is all accounted for).
contract ConservationTest is Fixture {
    address[] actors; // requesters, nodes, verifiers, treasury: every holder
    uint256 inflow; // tokens the test saw go into the contract
    uint256 outflow; // tokens the test saw come out
    uint256 slashCount;
    uint256[8] done; // successful operations by kind

    function setUp() public override {
        super.setUp();
        actors.push(alice);
        actors.push(bob);
        actors.push(node);
        actors.push(treasury);
        for (uint256 i; i < vaddrs.length; ++i) {
            actors.push(vaddrs[i]);
        }
        for (uint256 i; i < actors.length; ++i) {
            fund(actors[i], 10_000 ether);
        }
        // What setUp staked came in too.
        inflow = token.balanceOf(address(v));
    }

    function pick(uint256 seed, uint256 salt, uint256 n) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(seed, salt))) % n;
    }

    function held(address a) internal view returns (uint256) {
        return token.balanceOf(a);
    }

    /// forge-config: default.fuzz.runs = 48
    function testFuzz_token_total_is_conserved(uint256 seed) public {
        for (uint256 step; step < 30; ++step) {
            uint256 r = uint256(keccak256(abi.encode(seed, step)));
            address a = actors[r % actors.length];
            uint256 amount = 1 + (r >> 8) % 500 ether;
            uint256 op = (r >> 128) % 8;
            uint256 before = held(a);
            vm.startPrank(a);
            if (op == 0) {
                try v.deposit(a, amount) {
                    inflow += amount;
                    done[0]++;
                } catch {}
            } else if (op == 1) {
                try v.requestWithdrawal(amount) {
                    done[1]++;
                } catch {}
            } else if (op == 2) {
                vm.warp(block.timestamp + WITHDRAW_DELAY);
                try v.withdraw() {
                    outflow += held(a) - before;
                    done[2]++;
                } catch {}
            } else if (op == 3) {
                try v.stake(amount) {
                    inflow += amount;
                    done[3]++;
                } catch {}
            } else if (op == 4) {
                try v.unbond(amount) {
                    done[4]++;
                } catch {}
            } else if (op == 5) {
                vm.warp(block.timestamp + UNBOND_DELAY);
                try v.withdrawUnbonded() {
                    outflow += held(a) - before;
                    done[5]++;
                } catch {}
            } else if (op == 6) {
                vm.stopPrank();
                settleRandom(r);
                done[6]++;
                vm.startPrank(a);
            } else {
                vm.stopPrank();
                slashRandom(r);
                vm.startPrank(a);
            }
            vm.stopPrank();
            checkAll();
        }
    }

    /// Over all fuzz runs every kind of operation succeeds many times; this
    /// deterministic run checks that each kind succeeded at least once.
    function test_every_operation_kind_is_exercised() public {
        for (uint256 seed; seed < 4; ++seed) {
            testFuzz_token_total_is_conserved(seed);
        }
        for (uint256 k; k < 8; ++k) {
            assertTrue(done[k] > 0, string.concat("operation kind ", _u(k), " succeeded"));
        }
    }

    /// A checkpoint moving part of two payers' balances to two payees.
    function settleRandom(uint256 r) internal {
        address p1 = actors[pick(r, 1, actors.length)];
        address p2 = actors[pick(r, 2, actors.length)];
        address q1 = actors[pick(r, 3, actors.length)];
        address q2 = actors[pick(r, 4, actors.length)];
        // Net per account, as the off-chain side does.
        address[4] memory who = [p1, p2, q1, q2];
        int256[4] memory d;
        int256 x = int256(balanceOf(p1) / 3);
        int256 y = int256(balanceOf(p2) / 5);
        d[0] = -x;
        d[1] = -y;
        d[2] = (x + y) / 2;
        d[3] = x + y - (x + y) / 2;
        bytes32[] memory t = new bytes32[](4);
        uint256 n;
        for (uint256 i; i < 4; ++i) {
            bool merged;
            for (uint256 j; j < n; ++j) {
                if (address(uint160(uint256(t[j]) >> 96)) == who[i]) {
                    t[j] = pack(who[i], int96(uint96(uint256(t[j]))) + d[i]);
                    merged = true;
                }
            }
            if (!merged) t[n++] = pack(who[i], d[i]);
        }
        // Drop zero deltas.
        uint256 k;
        for (uint256 i; i < n; ++i) {
            if (uint96(uint256(t[i])) != 0) t[k++] = t[i];
        }
        assembly ("memory-safe") {
            mstore(t, k)
        }
        sortTransfers(t);
        uint64 oldSize = v.settledSize();
        uint64 newSize = oldSize + 1 + uint64(pick(r, 5, 4));
        bytes32[] memory l = MerkleGen.leaves(newSize);
        bytes32 root = MerkleGen.root(l, newSize);
        bytes32[] memory proof = oldSize == 0 ? noProof : MerkleGen.consistencyProof(l, oldSize, newSize);
        bytes memory sigs = checkpointSigs(firstKeys(3), oldSize, newSize, v.settledRoot(), root, t);
        v.settle(oldSize, newSize, root, proof, t, noHolds, sigs);
    }

    function slashRandom(uint256 r) internal {
        // Accuse the inference node or the last verifier; the first three sign.
        address accused = pick(r, 6, 2) == 0 ? node : vaddrs[3];
        bytes32 result = keccak256(abi.encode("result", ++slashCount));
        bytes memory sigs = slashSigs(firstKeys(3), accused, result, "reason");
        try v.slash(accused, result, "reason", anchor(), sigs) {
            done[7]++;
        } catch {}
    }

    function checkAll() internal view {
        assertConserved();
        (uint256 e, uint256 s, uint256 u) = v.totals();
        uint256 sumBal;
        uint256 sumStake;
        uint256 sumUnb;
        uint256 sumHeld;
        for (uint256 i; i < actors.length; ++i) {
            sumBal += balanceOf(actors[i]);
            (uint256 st, uint256 un) = stakeOf(actors[i]);
            sumStake += st;
            sumUnb += un;
            sumHeld += held(actors[i]);
        }
        assertEq(e, sumBal, "escrow total == sum of account balances");
        assertEq(s, sumStake, "staked total == sum of stakes");
        assertEq(u, sumUnb, "unbonding total == sum of unbonding");
        assertEq(held(address(v)), inflow - outflow, "contract holds deposits + stakes - withdrawals");
        assertEq(sumHeld + held(address(v)) + held(address(this)), SUPPLY, "no token created or lost");
    }
}
