"""The member's side of a recovery, without processes: the CLI hands a share only to a node whose
evidence binds its keys and meets the member's policy."""

from __future__ import annotations

import msgspec
import pytest

from conclavium.cli.context import CliError
from conclavium.cli.recovery_share import check_node
from conclavium.crypto import sealing
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from tests.executor.machine_harness import Node

POLICY = {
    "environment": "development",
    "platforms": ["virtual"],
    "measurements": [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}],
}


def _status(node: Node) -> dict:
    return msgspec.to_builtins(node.info("recovery-0"))


def test_a_node_whose_evidence_binds_its_keys_is_accepted() -> None:
    node = Node()
    assert check_node(_status(node), POLICY) == sealing.public_bytes(node.enc)


def test_a_substituted_encryption_key_is_refused() -> None:
    """A gateway that swaps the node's encryption key for its own gets nothing sealed to it."""
    status = _status(Node())
    status["encryption_key"] = sealing.public_bytes(sealing.generate_key()).hex()
    with pytest.raises(CliError, match="attestation is refused"):
        check_node(status, POLICY)


def test_a_measurement_the_member_does_not_accept_is_refused() -> None:
    status = _status(Node(measurement="ab" * 32))
    with pytest.raises(CliError, match="attestation is refused"):
        check_node(status, POLICY)


def test_a_production_policy_refuses_virtual_evidence() -> None:
    with pytest.raises(CliError, match="attestation is refused"):
        check_node(_status(Node()), {**POLICY, "environment": "production", "platforms": ["snp"]})


def test_malformed_node_keys_are_refused() -> None:
    status = _status(Node())
    status["signing_key"] = "not a key"
    with pytest.raises(CliError, match="malformed"):
        check_node(status, POLICY)
