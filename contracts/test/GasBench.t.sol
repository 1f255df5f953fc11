// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {Fixture} from "./Fixture.sol";
import {MerkleGen} from "./utils/MerkleGen.sol";
import {Verinfer} from "../src/Verinfer.sol";

/// Gas of one checkpoint settlement carrying the netted transfers of 10, 100
/// and 1,000 receipts: up to 50 payers, 2 inference nodes, 3 verifiers (the
/// quorum, all signing) and the treasury. Each receipt's fee is split 70/20/10
/// (node / verifiers / treasury) and netted per account off chain; the
/// contract sees one signed word per account.
///
/// Measured: a warm-up checkpoint 0 -> N (so that payees' balances exist, as
/// in a running network), then N -> 2N and 2N -> 3N with real consistency
/// proofs. Before each measured call the contract's account and storage are
/// made cold (vm.cool), as at the start of a transaction. Reported:
///   exec     = gasleft() delta of the call, less the 2,600 of the cold CALL
///              (in a transaction the target's access is part of the 21,000)
///   calldata = 16 per non-zero byte, 4 per zero byte of the settle() calldata
///   tx       = 21,000 + calldata + exec, or the EIP-7623 floor if higher
///   per receipt = tx / N
/// Run with -vv to see the figures; the test fails above 1,000 gas per receipt
/// at 1,000 receipts.
contract GasBenchTest is Fixture {
    uint256 constant PAYERS = 50;
    address[] payers;
    address node2;

    function setUp() public override {
        super.setUp();
        node2 = makeAddr("node2");
        registerNode(node2, 1, MIN_STAKE);
        for (uint256 i; i < PAYERS; ++i) {
            address p = address(uint160(uint256(keccak256(abi.encode("payer", i)))));
            payers.push(p);
            depositFor(p, 1_000 ether);
        }
    }

    /// The netted transfers of `receipts` receipts, sorted by account.
    function netted(uint256 receipts, uint256 salt) internal view returns (bytes32[] memory t) {
        uint256 np = receipts < PAYERS ? receipts : PAYERS;
        int256[] memory debit = new int256[](np);
        int256[2] memory toNode;
        int256[3] memory toVerifier;
        int256 toTreasury;
        for (uint256 j; j < receipts; ++j) {
            // 0.001 to ~0.0013 tokens a receipt: a few hundred tokens at a price
            // of a few 1e12 base units a token.
            int256 fee = int256(1e15 + (uint256(keccak256(abi.encode(salt, j))) % 3e14));
            debit[j % np] += fee;
            int256 nodeShare = fee * 7000 / 10_000;
            int256 verShare = fee * 2000 / 10_000;
            int256 each = verShare / 3;
            toNode[j % 2] += nodeShare;
            for (uint256 k; k < 3; ++k) {
                toVerifier[k] += each;
            }
            toTreasury += fee - nodeShare - 3 * each;
        }
        t = new bytes32[](np + 6);
        for (uint256 i; i < np; ++i) {
            t[i] = pack(payers[i], -debit[i]);
        }
        t[np] = pack(node, toNode[0]);
        t[np + 1] = pack(node2, toNode[1]);
        for (uint256 k; k < 3; ++k) {
            t[np + 2 + k] = pack(vaddrs[k], toVerifier[k]);
        }
        t[np + 5] = pack(treasury, toTreasury);
        sortTransfers(t);
    }

    function calldataGas(bytes memory data) internal pure returns (uint256 g, uint256 tokens) {
        for (uint256 i; i < data.length; ++i) {
            if (data[i] == 0) {
                g += 4;
                tokens += 1;
            } else {
                g += 16;
                tokens += 4;
            }
        }
    }

    struct Measured {
        uint256 exec;
        uint256 calldataGas;
        uint256 tx;
        uint256 accounts;
        uint256 proofLen;
        uint256 bytesLen;
    }

    function measure(bytes32[] memory l, uint64 oldSize, uint64 newSize, uint256 salt)
        internal
        returns (Measured memory m)
    {
        bytes32[] memory t = netted(newSize - oldSize, salt);
        bytes32 newRoot = MerkleGen.root(l, newSize);
        bytes32[] memory proof = MerkleGen.consistencyProof(l, oldSize, newSize);
        bytes memory sigs = checkpointSigs(firstKeys(3), oldSize, newSize, v.settledRoot(), newRoot, t);
        bytes memory data = abi.encodeCall(v.settle, (oldSize, newSize, newRoot, proof, t, noHolds, sigs));
        vm.cool(address(v));
        uint256 g0 = gasleft();
        (bool ok,) = address(v).call(data);
        uint256 used = g0 - gasleft();
        assertTrue(ok, "settle succeeded");
        assertEq(v.settledSize(), newSize, "settled");
        uint256 tokens;
        (m.calldataGas, tokens) = calldataGas(data);
        m.exec = used - 2600;
        m.tx = 21_000 + m.calldataGas + m.exec;
        uint256 floor = 21_000 + 10 * tokens; // EIP-7623
        if (floor > m.tx) m.tx = floor;
        m.accounts = t.length;
        m.proofLen = proof.length;
        m.bytesLen = data.length;
    }

    function bench(uint64 n) internal returns (uint256 perReceipt) {
        bytes32[] memory l = MerkleGen.leaves(3 * n);
        // Warm-up 0 -> N.
        bytes32[] memory t = netted(n, 0);
        bytes32 r = MerkleGen.root(l, n);
        bytes32[] memory none;
        bytes memory sigs = checkpointSigs(firstKeys(3), 0, n, v.settledRoot(), r, t);
        v.settle(0, n, r, none, t, noHolds, sigs);
        Measured memory a = measure(l, n, 2 * n, 1);
        Measured memory b = measure(l, 2 * n, 3 * n, 2);
        log(string.concat("== receipts per checkpoint: ", _u(n), ", accounts: ", _u(a.accounts)));
        report("N->2N", n, a);
        report("2N->3N", n, b);
        perReceipt = (a.tx + b.tx) / (2 * n);
        log("   mean tx gas per receipt", perReceipt);
        assertConserved();
    }

    function report(string memory what, uint256 n, Measured memory m) internal view {
        log(
            string.concat(
                "   ",
                what,
                ": tx gas ",
                _u(m.tx),
                " (exec ",
                _u(m.exec),
                " + calldata ",
                _u(m.calldataGas),
                " + 21000; ",
                _u(m.bytesLen),
                " bytes, proof ",
                _u(m.proofLen),
                " hashes), per receipt ",
                _u(m.tx / n)
            )
        );
    }

    function test_gas_checkpoint_10_receipts() public {
        bench(10);
    }

    function test_gas_checkpoint_100_receipts() public {
        bench(100);
    }

    function test_gas_checkpoint_1000_receipts() public {
        uint256 perReceipt = bench(1000);
        assertLe(perReceipt, 1000, "target: at most 1,000 gas per receipt at 1,000 receipts");
    }
}
