"""Shared fixtures: real NATS (JetStream) and Redis on free ports, and whole local networks of
real service processes, started with the same code as `conclavium local up`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conclavium.local.network import LocalNetwork, start_network
from conclavium.local.processes import Process, find_binary, nats_process, redis_process


@pytest.fixture(scope="module")
def nats_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    d = tmp_path_factory.mktemp("nats")
    p = nats_process(d / "data", d / "logs")
    p.start()
    p.wait_ready()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def nats_url(nats_proc: Process) -> str:
    return f"nats://127.0.0.1:{nats_proc.port}"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if find_binary("redis-server") is None:
        pytest.fail("redis-server is required (./dev test installs it)")
    d = tmp_path_factory.mktemp("redis")
    p = redis_process(d / "data", d / "logs")
    assert p is not None
    p.start()
    p.wait_ready()
    yield f"redis://127.0.0.1:{p.port}/0"
    p.stop()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """Three members, three executors, one sequencer, gateway, Redis: shared by a module's tests."""
    net = start_network(tmp_path_factory.mktemp("net"), redis=True)
    yield net
    net.stop()


@pytest.fixture(scope="session")
def attestation_vectors() -> Path:
    """The real evidence in shared/attestation/vectors, beside the checkout (CI) or in the workspace."""
    for candidate in (
        os.environ.get("CONCLAVIUM_VECTORS"),
        Path(__file__).resolve().parents[2] / "shared" / "attestation" / "vectors",
        Path("/work/shared/attestation/vectors"),
    ):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    pytest.fail("shared/attestation/vectors not found beside the checkout; set CONCLAVIUM_VECTORS")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long fault variants (marker `long_faults`) are skipped unless CONCLAVIUM_LONG_FAULTS=1, which
    `./dev test-faults` sets: the default `./dev test` stays within its stated time budget."""
    if os.environ.get("CONCLAVIUM_LONG_FAULTS") == "1":
        return
    skip = pytest.mark.skip(reason="a long fault variant: `./dev test-faults` runs it (CONCLAVIUM_LONG_FAULTS=1)")
    for item in items:
        if item.get_closest_marker("long_faults") is not None:
            item.add_marker(skip)
