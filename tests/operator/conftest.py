"""Fixtures for the operator tests: the kmock API emulator, kopf in its own thread, a real local network.

See operator_harness.py for the kmock/kopf workarounds.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml

# The operator is the package `conclavium_operator` in operator/ (operator/ itself is not a package:
# `operator` would shadow the standard library). Until pyproject's package discovery includes
# operator/, put it on sys.path here.
OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
if str(OPERATOR_DIR) not in sys.path:
    sys.path.insert(0, str(OPERATOR_DIR))

from operator_harness import (  # noqa: E402
    NAMESPACE,
    OPERATOR_CALLS,
    OperatorThread,
    RVEmulator,
    load_resources,
    start_local_network,
)

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


@functools.cache
def chart_grants() -> set[tuple[bool, str, str, str]] | None:
    """(namespaced?, group, resource, verb) the chart's ClusterRole and Role grant; None without helm."""
    root = OPERATOR_DIR.parent
    helm = root / ".tools" / "bin" / "helm"
    binary = str(helm) if os.access(helm, os.X_OK) else shutil.which("helm")
    if binary is None:
        return None
    out = subprocess.run(
        [binary, "template", "conclavium", str(root / "helm" / "conclavium"), "--namespace", NAMESPACE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    grants = set()
    for doc in yaml.safe_load_all(out):
        if doc and doc.get("kind") in ("ClusterRole", "Role"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            grants.add((doc["kind"] == "Role", group, resource, verb))
    return grants


@pytest.fixture()
async def k8s(kmock: RVEmulator) -> AsyncIterator[RVEmulator]:
    """kmock with our resources; afterwards, every request the operator made must be one the chart's
    RBAC allows (a namespaced request may also be granted cluster-wide)."""
    load_resources(kmock)
    OPERATOR_CALLS.clear()
    yield kmock
    grants = chart_grants()
    if grants is not None:
        denied = {c for c in OPERATOR_CALLS if c not in grants and (False, *c[1:]) not in grants}
        assert not denied, f"the operator made calls the chart's RBAC denies: {sorted(denied)}"


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
