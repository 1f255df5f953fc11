// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The forge cheatcodes these tests use (forge-std is not available
/// offline; this is our own minimal declaration of the same interface).
interface Vm {
    function prank(address sender) external;
    function startPrank(address sender) external;
    function stopPrank() external;
    // No bare expectRevert(): a test that expects a revert names the error.
    function expectRevert(bytes4 selector) external;
    function expectRevert(bytes calldata revertData) external;
    /// Expects a revert with this selector, whatever the error's arguments.
    function expectPartialRevert(bytes4 selector) external;
    function warp(uint256 timestamp) external;
    function store(address target, bytes32 slot, bytes32 value) external;
    function load(address target, bytes32 slot) external view returns (bytes32);
    function roll(uint256 blockNumber) external;
    function chainId(uint256 id) external;
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function label(address account, string calldata name) external;
    /// Marks the account and its storage as cold (EIP-2929), as at the start of a transaction.
    function cool(address target) external;
    function pauseGasMetering() external;
    function resumeGasMetering() external;
}

/// @notice Minimal test base: the cheatcode handle, assertions that revert
/// with a message (forge reports a reverting test as failed), and logging
/// through forge's console address (shown with `forge test -vv`).
abstract contract Test {
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);
    address private constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    bool public IS_TEST = true;

    function fail(string memory what) internal pure {
        revert(string.concat("assertion failed: ", what));
    }

    function assertTrue(bool c, string memory what) internal pure {
        if (!c) fail(what);
    }

    function assertFalse(bool c, string memory what) internal pure {
        if (c) fail(what);
    }

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) fail(string.concat(what, ": ", _u(a), " != ", _u(b)));
    }

    function assertEq(int256 a, int256 b, string memory what) internal pure {
        if (a != b) fail(what);
    }

    function assertEq(address a, address b, string memory what) internal pure {
        if (a != b) fail(what);
    }

    function assertEq(bytes32 a, bytes32 b, string memory what) internal pure {
        if (a != b) fail(what);
    }

    function assertEq(bool a, bool b, string memory what) internal pure {
        if (a != b) fail(what);
    }

    function assertEq(string memory a, string memory b, string memory what) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) fail(string.concat(what, ": '", a, "' != '", b, "'"));
    }

    function assertEq(bytes memory a, bytes memory b, string memory what) internal pure {
        if (keccak256(a) != keccak256(b)) fail(what);
    }

    function assertLe(uint256 a, uint256 b, string memory what) internal pure {
        if (a > b) fail(string.concat(what, ": ", _u(a), " > ", _u(b)));
    }

    function log(string memory s) internal view {
        _console(abi.encodeWithSignature("log(string)", s));
    }

    function log(string memory s, uint256 x) internal view {
        _console(abi.encodeWithSignature("log(string,uint256)", s, x));
    }

    function _console(bytes memory payload) private view {
        address c = CONSOLE;
        assembly ("memory-safe") {
            pop(staticcall(gas(), c, add(payload, 32), mload(payload), 0, 0))
        }
    }

    function _u(uint256 x) internal pure returns (string memory) {
        if (x == 0) return "0";
        bytes memory b;
        while (x != 0) {
            b = abi.encodePacked(bytes1(uint8(48 + x % 10)), b);
            x /= 10;
        }
        return string(b);
    }

    /// @dev A distinct address per label, for accounts that never sign.
    function makeAddr(string memory name) internal returns (address a) {
        a = address(uint160(uint256(keccak256(bytes(name)))));
        vm.label(a, name);
    }
}
