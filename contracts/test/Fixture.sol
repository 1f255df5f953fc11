// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Test} from "./utils/Test.sol";
import {MerkleGen} from "./utils/MerkleGen.sol";
import {IERC20} from "../src/IERC20.sol";
import {VerinferToken} from "../src/VerinferToken.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// @notice Deploys the token and Verinfer with default parameters, four
/// staked verifiers (quorum 3) and one staked inference node, and offers
/// helpers to sign checkpoints and slash evidence and to pack transfers.
abstract contract Fixture is Test {
    uint256 internal constant MIN_STAKE = 100 ether;
    uint256 internal constant SUPPLY = 1_000_000_000 ether;
    uint32 internal constant UNBOND_DELAY = 14 days;
    uint32 internal constant WITHDRAW_DELAY = 1 days;
    uint32 internal constant VOTING_PERIOD = 3 days;
    bytes32 internal constant MODEL = keccak256("model: SmolLM2-135M-Instruct");

    VerinferToken internal token;
    Verinfer internal v;
    address internal treasury;

    /// Verifier private keys, sorted by ascending address.
    uint256[] internal vkeys;
    address[] internal vaddrs;
    uint256 internal nodeKey = 0xB0B;
    address internal node;
    address internal alice; // a requester
    address internal bob; // another requester

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        treasury = makeAddr("treasury");
        alice = makeAddr("alice");
        bob = makeAddr("bob");
        token = new VerinferToken(SUPPLY);
        v = new Verinfer(IERC20(address(token)), defaultParams(), defaultModels());
        uint256[4] memory ks = [uint256(0xA11CE1), 0xA11CE2, 0xA11CE3, 0xA11CE4];
        for (uint256 i; i < ks.length; ++i) {
            vkeys.push(ks[i]);
        }
        _sortKeys(vkeys);
        for (uint256 i; i < vkeys.length; ++i) {
            address a = vm.addr(vkeys[i]);
            vaddrs.push(a);
            registerNode(a, v.ROLE_VERIFIER(), MIN_STAKE);
        }
        node = vm.addr(nodeKey);
        registerNode(node, v.ROLE_INFERENCE(), MIN_STAKE);
    }

    function defaultParams() internal view returns (Verinfer.Params memory p) {
        p = Verinfer.Params({
            minStake: uint128(MIN_STAKE),
            quorum: 3,
            slashQuorum: 3,
            slashBps: 5000,
            slashRewardBps: 1000,
            feeInferenceBps: 7000,
            feeVerifierBps: 2000,
            feeTreasuryBps: 1000,
            unbondDelay: UNBOND_DELAY,
            withdrawDelay: WITHDRAW_DELAY,
            votingPeriod: VOTING_PERIOD,
            treasury: treasury
        });
    }

    function defaultModels() internal pure returns (Verinfer.InitialModel[] memory m) {
        m = new Verinfer.InitialModel[](1);
        m[0] = Verinfer.InitialModel({id: MODEL, priceIn: 1e12, priceOut: 2e12});
    }

    /// The getter returns the 12 fields as a tuple; decode them as the struct.
    function currentParams() internal view returns (Verinfer.Params memory p) {
        (bool ok, bytes memory ret) = address(v).staticcall(abi.encodeCall(v.params, ()));
        assertTrue(ok, "params()");
        p = abi.decode(ret, (Verinfer.Params));
    }

    /// Overwrite the parameters in storage (slots 0 and 1), for tests of
    /// other features under other parameters; checked against the getter so
    /// a layout change cannot go unnoticed. Governance has its own tests.
    function storeParams(Verinfer.Params memory p) internal {
        uint256 s0 = uint256(p.minStake) | uint256(p.quorum) << 128 | uint256(p.slashQuorum) << 144
            | uint256(p.slashBps) << 160 | uint256(p.slashRewardBps) << 176 | uint256(p.feeInferenceBps) << 192
            | uint256(p.feeVerifierBps) << 208 | uint256(p.feeTreasuryBps) << 224;
        uint256 s1 = uint256(p.unbondDelay) | uint256(p.withdrawDelay) << 32 | uint256(p.votingPeriod) << 64
            | uint256(uint160(p.treasury)) << 96;
        vm.store(address(v), bytes32(0), bytes32(s0));
        vm.store(address(v), bytes32(uint256(1)), bytes32(s1));
        assertEq(abi.encode(currentParams()), abi.encode(p), "stored params read back");
    }

    // ---------------------------------------------------------------- actors

    function fund(address who, uint256 amount) internal {
        token.transfer(who, amount);
        vm.prank(who);
        token.approve(address(v), type(uint256).max);
    }

    function registerNode(address who, uint8 role, uint256 amount) internal {
        fund(who, amount);
        vm.prank(who);
        v.register(
            role, keccak256(abi.encode("ed25519", who)), string.concat("http://node/", _u(uint160(who) % 1000)), amount
        );
    }

    function depositFor(address who, uint256 amount) internal {
        fund(who, amount);
        vm.prank(who);
        v.deposit(who, amount);
    }

    function balanceOf(address who) internal view returns (uint256 b) {
        (b,,) = v.accounts(who);
    }

    function stakeOf(address who) internal view returns (uint256 s, uint256 unbonding) {
        (s,,, unbonding,,) = v.nodes(who);
    }

    // ---------------------------------------------------------- signatures

    function sign(uint256[] memory keys, bytes32 digest) internal pure returns (bytes memory sigs) {
        for (uint256 i; i < keys.length; ++i) {
            (uint8 sv, bytes32 r, bytes32 s) = vm.sign(keys[i], digest);
            sigs = abi.encodePacked(sigs, r, s, sv);
        }
    }

    /// The first `n` verifier keys (ascending by address).
    function firstKeys(uint256 n) internal view returns (uint256[] memory k) {
        k = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            k[i] = vkeys[i];
        }
    }

    function keys2(uint256 a, uint256 b) internal pure returns (uint256[] memory k) {
        k = new uint256[](2);
        k[0] = a;
        k[1] = b;
    }

    function keys3(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory k) {
        k = new uint256[](3);
        k[0] = a;
        k[1] = b;
        k[2] = c;
    }

    function _sortKeys(uint256[] storage k) internal {
        for (uint256 i = 1; i < k.length; ++i) {
            for (uint256 j = i; j > 0 && vm.addr(k[j - 1]) > vm.addr(k[j]); --j) {
                (k[j - 1], k[j]) = (k[j], k[j - 1]);
            }
        }
    }

    function sortKeysMem(uint256[] memory k) internal pure returns (uint256[] memory) {
        for (uint256 i = 1; i < k.length; ++i) {
            for (uint256 j = i; j > 0 && vm.addr(k[j - 1]) > vm.addr(k[j]); --j) {
                (k[j - 1], k[j]) = (k[j], k[j - 1]);
            }
        }
        return k;
    }

    // ----------------------------------------------------------- transfers

    function pack(address a, int256 delta) internal pure returns (bytes32) {
        return bytes32((uint256(uint160(a)) << 96) | uint256(uint96(int96(delta))));
    }

    function t1(address a, int256 da) internal pure returns (bytes32[] memory t) {
        t = new bytes32[](1);
        t[0] = pack(a, da);
    }

    /// Two transfers, sorted by address.
    function t2(address a, int256 da, address b, int256 db) internal pure returns (bytes32[] memory t) {
        t = new bytes32[](2);
        (t[0], t[1]) = a < b ? (pack(a, da), pack(b, db)) : (pack(b, db), pack(a, da));
    }

    /// Sort packed transfer words by account (the high 160 bits).
    function sortTransfers(bytes32[] memory t) internal pure returns (bytes32[] memory) {
        for (uint256 i = 1; i < t.length; ++i) {
            bytes32 x = t[i];
            uint256 j = i;
            while (j > 0 && uint256(t[j - 1]) >> 96 > uint256(x) >> 96) {
                t[j] = t[j - 1];
                --j;
            }
            t[j] = x;
        }
        return t;
    }

    // ---------------------------------------------------------- settlement

    bytes32[] internal noProof;
    Verinfer.Hold[] internal noHolds;

    function checkpointSigs(
        uint256[] memory keys,
        uint64 oldSize,
        uint64 newSize,
        bytes32 oldRoot,
        bytes32 newRoot,
        bytes32[] memory transfers
    ) internal view returns (bytes memory) {
        return sign(keys, v.checkpointDigest(oldSize, newSize, oldRoot, newRoot, transfers, noHolds));
    }

    /// Settle the log of test leaves from the settled size to `newSize`,
    /// signed by the first `quorum` verifiers, with a real consistency proof.
    function settleTo(uint64 newSize, bytes32[] memory transfers) internal {
        settleTo(newSize, transfers, noHolds);
    }

    /// The same, holding optimistic answers' fees.
    function settleTo(uint64 newSize, bytes32[] memory transfers, Verinfer.Hold[] memory holds) internal {
        uint64 oldSize = v.settledSize();
        bytes32[] memory l = MerkleGen.leaves(newSize);
        bytes32 newRoot = MerkleGen.root(l, newSize);
        bytes32[] memory proof = oldSize == 0 ? noProof : MerkleGen.consistencyProof(l, oldSize, newSize);
        bytes memory sigs =
            sign(firstKeys(3), v.checkpointDigest(oldSize, newSize, v.settledRoot(), newRoot, transfers, holds));
        v.settle(oldSize, newSize, newRoot, proof, transfers, holds, sigs);
    }

    function slashSigs(uint256[] memory keys, address accused, bytes32 resultHash, bytes32 reasonHash)
        internal
        view
        returns (bytes memory)
    {
        return sign(keys, v.slashDigest(accused, resultHash, reasonHash, anchor()));
    }

    /// The anchor the tests slash at: now, when every fixture verifier is
    /// registered.
    function anchor() internal view returns (uint64) {
        return uint64(block.timestamp);
    }

    // -------------------------------------------------------- conservation

    /// The contract holds exactly escrow + bonded + unbonding.
    function assertConserved() internal view {
        (uint256 e, uint256 s, uint256 u) = v.totals();
        assertEq(token.balanceOf(address(v)), e + s + u, "token held == escrow + staked + unbonding");
    }
}
