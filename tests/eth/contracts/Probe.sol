// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// A contract created by CREATE2 from `Probe.make`.
contract Child {
    address public owner;

    constructor(address o) {
        owner = o;
    }
}

/// Reverts with a reason or a custom error, calls another contract, creates one with CREATE2.
contract Probe {
    error Refused(uint256 code);
    event Stored(address indexed by, uint256 value);

    uint256 public value;

    function store(uint256 v) external {
        require(v != 13, "thirteen is refused");
        if (v == 7) revert Refused(7);
        value = v;
        emit Stored(msg.sender, v);
    }

    function readOther(address other) external view returns (uint256) {
        return Probe(other).value();
    }

    function storeOther(address other, uint256 v) external {
        Probe(other).store(v);
    }

    function make(bytes32 salt) external returns (address) {
        return address(new Child{salt: salt}(msg.sender));
    }

    function pay(address payable to) external payable {
        to.transfer(msg.value);
    }
}
