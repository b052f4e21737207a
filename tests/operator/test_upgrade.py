"""A governed upgrade through the real operator on kmock and a real ledger: three members, one executor
each; a new Consortium version replaces the executors one at a time (operator/upgrade.py).

The harness plays the kubelet and the executor processes (`PodRunner`): for every StatefulSet the
operator creates it joins a node of that name to the ledger (attested, virtual TEE) and marks the pod
ready (what a real executor's readiness probe says once it signs and has caught up).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import pytest
from ledger_helpers import join_node, member_pem, proposal, vote
from operator_harness import NAMESPACE, RVEmulator, condition, obj, url, wait_for
from test_operator import consortium, measurements_configmap, member, secret

from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(600)
MEMBERS = ("alice", "bob", "carol")
OLD_IMAGE = "example.org/conclavium:test"  # the operator's CONCLAVIUM_IMAGE in the harness
NEW_IMAGE = "example.org/conclavium:2.0.0"


def names(k8s: RVEmulator, plural: str) -> list[str]:
    return sorted({key[2] for key in k8s.objects if obj(k8s, plural, key[2]) is not None})


class PodRunner:
    """What the cluster and the executor processes would do for the operator's StatefulSets."""

    def __init__(self, k8s: RVEmulator, net: LocalNetwork) -> None:
        self.k8s, self.net = k8s, net
        self.joined: dict[str, str] = {}  # StatefulSet uid → node id
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodRunner:
        self.task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    async def run(self) -> None:
        while True:
            for name in names(self.k8s, "statefulsets"):
                sts = obj(self.k8s, "statefulsets", name)
                if sts is not None and sts["metadata"]["uid"] not in self.joined:
                    self.joined[sts["metadata"]["uid"]] = await join_node(self.net, name)
                    await self.k8s.patch(url("statefulsets", name), json={"status": {"readyReplicas": 1}})
            await asyncio.sleep(0.3)


def executors(k8s: RVEmulator) -> list[dict[str, Any]]:
    found = [obj(k8s, "consortiumnodes", n) for n in names(k8s, "consortiumnodes")]
    return [n for n in found if n is not None and n["spec"]["role"] == "Executor"]


def trusted(node: dict[str, Any]) -> bool:
    c = condition(node, "Trusted")
    return c is not None and c["status"] == "True"


async def seed_three_members(k8s: RVEmulator, net: LocalNetwork, cons: dict[str, Any] | None = None) -> None:
    """The Consortium and alice, bob and carol (the local network's members) with one executor each.
    Three, because the operator counts only the executors it runs against the ledger's commit quorum."""
    await k8s.post(url("consortiums"), json=cons or consortium())
    for i, name in enumerate(MEMBERS):
        cert, key = member_pem(net, i)
        data = {"tls.crt": cert, **({"private.key": key} if i == 0 else {})}
        await k8s.post(url("secrets"), json=secret(f"{name}-identity", data))
        ref: dict[str, Any] = {"name": f"{name}-identity", "certificateKey": "tls.crt"}
        identity: dict[str, Any] = {"keyAlgorithm": "Ed25519", "secretRef": ref}
        if i == 0:  # alice lets the operator propose (development consortium)
            ref["privateKeyKey"] = "private.key"
            identity["inClusterSigning"] = True
        await k8s.post(url("consortiummembers"), json=member(name, identity, executors=1))


def progressing(k8s: RVEmulator) -> dict[str, Any]:
    return condition(obj(k8s, "consortiums", "demo"), "Progressing") or {}


async def test_a_new_version_replaces_executors_one_at_a_time_through_retire_node_votes(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    await operator_for(net.gateway_url)
    await seed_three_members(k8s, net)
    async with PodRunner(k8s, net):
        await wait_for(
            lambda: len(executors(k8s)) == 3 and all(trusted(n) for n in executors(k8s)), 60, "three trusted executors"
        )
        await wait_for(lambda: progressing(k8s).get("reason") == "UpToDate", 30, "Progressing=False/UpToDate")
        assert progressing(k8s)["status"] == "False"
        first = {n["metadata"]["name"] for n in executors(k8s)}
        assert first == {f"{m}-executor-0" for m in MEMBERS}

        await k8s.patch(url("consortiums", "demo"), json={"spec": {"version": "2.0.0"}})
        accepted: list[str] = []
        reasons: set[str] = set()
        most_untrusted = 0
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            nodes = executors(k8s)
            new = [n for n in nodes if n["spec"]["image"] == NEW_IMAGE]
            most_untrusted = max(most_untrusted, sum(1 for n in new if not trusted(n)))
            assert most_untrusted <= 1, f"two untrusted new executors at once: {[n['metadata']['name'] for n in new]}"
            for name in first & {n["metadata"]["name"] for n in nodes}:
                sts = obj(k8s, "statefulsets", name)
                assert sts is not None
                assert sts["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE, "an old pod restarted"
            reasons.add(str(progressing(k8s).get("reason")))
            async with Client(net.gateway_url) as c:
                for p in await c.proposals("Open"):
                    if any(a["name"] == "retire_node" for a in p["actions"]) and p["proposal_id"] not in accepted:
                        assert (await vote(net, p["proposal_id"], [1, 2]))["state"] == "Accepted"
                        accepted.append(p["proposal_id"])
            done = len(nodes) == 3 and len(new) == 3 and all(trusted(n) for n in new)
            if done and progressing(k8s).get("reason") == "UpToDate":
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"the upgrade did not finish: {progressing(k8s)}")

    assert len(accepted) == 3, accepted
    retired = []
    for pid in accepted:
        p = await proposal(net, pid)
        assert p["state"] == "Accepted"
        retired.append(p["actions"][0]["args"]["node_id"])
    assert len(set(retired)) == 3
    assert {n["metadata"]["name"] for n in executors(k8s)}.isdisjoint(first)
    assert {n["spec"]["memberRef"]["name"] for n in executors(k8s)} == set(MEMBERS)
    assert "WaitingForRetirement" in reasons, reasons  # the retire_node votes take a while
    posted = [e for e in (obj(k8s, "events", n) for n in names(k8s, "events")) if e]

    def about(reason: str) -> list[str]:
        return sorted(e["involvedObject"]["name"] for e in posted if e["reason"] == reason)

    assert about("UpgradeStep") == ["demo"] * 6, about("UpgradeStep")  # three adds, three retirements
    assert about("NodeRetired") == sorted(first)
    assert about("ProposalSubmitted") == sorted(first)  # one retire_node each
    assert set(about("Admitted")) == set(MEMBERS)
    assert all(e["involvedObject"]["namespace"] == NAMESPACE and e["type"] == "Normal" for e in posted)


async def test_no_executor_changes_until_the_ledger_allows_the_measurements(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    """A version change while the measurements ConfigMap lists a line the ledger does not allow yet
    touches no executor (Progressing=True/WaitingForMeasurement); once the members accept the one
    allow_measurement proposal, the first new executor is added."""
    line = os.urandom(48).hex()
    await k8s.post(url("configmaps"), json=measurements_configmap([line]))
    cons = consortium()
    cons["spec"]["tee"]["platforms"] = ["virtual", "sev-snp"]
    cons["spec"]["attestation"] = {"measurementsConfigMapRef": {"name": "demo-measurements"}}
    await operator_for(net.gateway_url)
    await seed_three_members(k8s, net, cons)
    async with PodRunner(k8s, net):
        await wait_for(
            lambda: len(executors(k8s)) == 3 and all(trusted(n) for n in executors(k8s)), 60, "three trusted executors"
        )
        await wait_for(lambda: progressing(k8s).get("reason") == "UpToDate", 30, "UpToDate")
        await k8s.patch(url("consortiums", "demo"), json={"spec": {"version": "2.0.0"}})
        await wait_for(lambda: progressing(k8s).get("reason") == "WaitingForMeasurement", 30, "measurement gate")
        await asyncio.sleep(3)  # several passes
        assert {n["metadata"]["name"] for n in executors(k8s)} == {f"{m}-executor-0" for m in MEMBERS}
        for name in (f"{m}-executor-0" for m in MEMBERS):
            sts = obj(k8s, "statefulsets", name)
            assert sts is not None and sts["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
        async with Client(net.gateway_url) as c:
            opened = [
                p for p in await c.proposals("Open") if any(a["name"] == "allow_measurement" for a in p["actions"])
            ]
        assert len(opened) == 1 and [a["args"]["measurement"] for a in opened[0]["actions"]] == [line]
        assert (await vote(net, opened[0]["proposal_id"], [1, 2]))["state"] == "Accepted"
        try:
            await wait_for(lambda: any(n["spec"]["image"] == NEW_IMAGE for n in executors(k8s)), 60, "a new executor")
        except AssertionError as e:
            raise AssertionError(f"{e}: {progressing(k8s)}") from e
        assert len(executors(k8s)) == 4
