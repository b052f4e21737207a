"""The Ethereum tests' shared fixtures."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# The machine-level tests build blocks with the executor tests' harness.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "executor"))

from eth_tools import compiled, need_tools

from conclavium.local.network import LocalNetwork, start_network


@pytest.fixture(scope="module")
def eth_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A local network with the Ethereum application voted on, one per test module (the tools
    installed and the contracts compiled first)."""
    need_tools()
    compiled()
    net = start_network(tmp_path_factory.mktemp("ethnet"), redis=True, eth=True)
    yield net
    net.stop()
