"""Fixtures for the operator tests: the kmock API emulator, kopf in its own thread, a real local network.

See operator_harness.py for the kmock/kopf workarounds.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

# The operator is the package `conclavium_operator` in operator/ (operator/ itself is not a package:
# `operator` would shadow the standard library). Until pyproject's package discovery includes
# operator/, put it on sys.path here.
OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))

from operator_harness import NAMESPACE, OperatorThread, RVEmulator, load_resources, start_local_network  # noqa: E402

from conclavium.local.network import LocalNetwork  # noqa: E402


@pytest.fixture(scope="package")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """One real local network (3 members, 3 executors, sequencer, gateway) for the whole package."""
    network = start_local_network(tmp_path_factory.mktemp("opnet"))
    yield network
    network.stop()


@pytest.fixture()
def kmock_options() -> dict[str, object]:
    return {"cls": RVEmulator}


@pytest.fixture()
async def k8s(kmock: RVEmulator) -> AsyncIterator[RVEmulator]:
    load_resources(kmock)
    yield kmock


@pytest.fixture()
async def operator_for(k8s: RVEmulator) -> AsyncIterator[object]:
    """Start the operator (kopf in its own thread) against `k8s` and a gateway URL given by the test."""
    started: list[OperatorThread] = []

    async def start(gateway_url: str, **cfg: object) -> OperatorThread:
        op = OperatorThread(k8s, gateway_url, **cfg)
        await op.start()
        started.append(op)
        return op

    yield start
    for op in started:
        await op.stop()


__all__ = ["NAMESPACE"]
