// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice A configurable ERC-20 for the token-plumbing paths of Verinfer:
/// `mode` 0 behaves normally, 1 returns nothing (USDT-style), 2 returns
/// false from transfer/transferFrom without moving anything, 3 returns false
/// from transfer only (so deposits work and withdrawals fail).
contract MockToken {
    uint8 public mode;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 public totalSupply;

    constructor(uint256 supply, uint8 mode_) {
        mode = mode_;
        totalSupply = supply;
        balanceOf[msg.sender] = supply;
    }

    function setMode(uint8 m) external {
        mode = m;
    }

    function approve(address s, uint256 a) external returns (bool) {
        allowance[msg.sender][s] = a;
        return true;
    }

    function transfer(address to, uint256 a) external {
        if (mode == 2 || mode == 3) _ret(false);
        _move(msg.sender, to, a);
        _done();
    }

    function transferFrom(address from, address to, uint256 a) external {
        if (mode == 2) _ret(false);
        require(allowance[from][msg.sender] >= a, "allowance");
        allowance[from][msg.sender] -= a;
        _move(from, to, a);
        _done();
    }

    function _move(address from, address to, uint256 a) private {
        require(balanceOf[from] >= a, "balance");
        balanceOf[from] -= a;
        balanceOf[to] += a;
    }

    function _done() private view {
        if (mode == 1) {
            assembly {
                return(0, 0)
            }
        }
        _ret(true);
    }

    function _ret(bool b) private pure {
        assembly {
            mstore(0, b)
            return(0, 32)
        }
    }
}
