"""Periodic re-verification (`spec.attestation.reverifyInterval`) through the real operator on kmock and
a real local ledger: each interval the operator asks the ledger whether an executor's recorded
attestation still meets the node policy; a policy the members tighten by vote makes it fail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conclavium_operator import metrics
from ledger_helpers import join_node, member_pem, proposal, vote
from operator_harness import RVEmulator, condition, obj, url, wait_for
from test_operator import consortium, member, secret

from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(180)
NODE = "rv-executor-0"
# The local network's genesis node policy (conclavium/local/network.py), and the same with a pin on
# host data that no virtual node's evidence carries: every trusted node drifts.
POLICY = {"environment": "development", "platforms": ["virtual"]}
PINNED = {**POLICY, "host_data": ["aa" * 32]}


async def seed(k8s: RVEmulator, net: LocalNetwork, interval: str) -> None:
    """The Consortium with a re-verification interval and alice (as member `rv`, one executor)."""
    cert, key = member_pem(net, 0)
    c = consortium()
    c["spec"]["attestation"] = {"reverifyInterval": interval}
    await k8s.post(url("consortiums"), json=c)
    await k8s.post(url("secrets"), json=secret("rv-identity", {"tls.crt": cert, "private.key": key}))
    identity = {
        "keyAlgorithm": "Ed25519",
        "secretRef": {"name": "rv-identity", "certificateKey": "tls.crt", "privateKeyKey": "private.key"},
        "inClusterSigning": True,
    }
    m = member("alice", identity, executors=1)
    m["metadata"]["name"] = "rv"
    await k8s.post(url("consortiummembers"), json=m)


def attested_at(k8s: RVEmulator) -> str | None:
    return ((obj(k8s, "consortiumnodes", NODE) or {}).get("status") or {}).get("lastAttestationTime")


async def set_policy(net: LocalNetwork, policy: dict[str, Any]) -> None:
    async with Client(net.gateway_url, net.member_key(0)) as c:
        opened = await c.propose([{"name": "set_node_policy", "args": {"policy": policy}}])
        assert (await c.wait(opened["tx_hash"]))["status"] == "Committed"
    if (await proposal(net, opened["proposal_id"]))["state"] != "Accepted":
        assert (await vote(net, opened["proposal_id"], [0, 1]))["state"] == "Accepted"


def warnings(k8s: RVEmulator) -> list[dict[str, Any]]:
    names = {key[2] for key in k8s.objects}
    posted = [e for e in (obj(k8s, "events", n) for n in names) if e]
    return [e for e in posted if e["reason"] == "PolicyDrift" and e["involvedObject"]["name"] == NODE]


async def test_reverification_records_each_pass_and_reports_policy_drift(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    passed, drifts = metrics.reverified("PolicyMet"), metrics.reverified("PolicyDrift")
    await operator_for(net.gateway_url)
    await seed(k8s, net, "1s")
    await wait_for(lambda: obj(k8s, "statefulsets", NODE), 30, "the executor's StatefulSet")
    await k8s.patch(url("statefulsets", NODE, "status"), json={"status": {"readyReplicas": 1}})
    node_id = await join_node(net, NODE)

    first = await wait_for(lambda: attested_at(k8s), 40, "a first re-verification")
    second = await wait_for(lambda: (attested_at(k8s) or first) != first and attested_at(k8s), 20, "a second one")
    assert second > first
    node = obj(k8s, "consortiumnodes", NODE)
    assert node is not None and node["status"]["nodeId"] == node_id
    assert condition(node, "Reverified")["reason"] == "PolicyMet"  # type: ignore[index]
    assert condition(node, "CaughtUp")["status"] == "True"  # type: ignore[index]
    assert warnings(k8s) == []
    assert metrics.reverified("PolicyMet") >= passed + 2

    await set_policy(net, PINNED)
    try:

        def drifted() -> dict[str, Any] | None:
            c = condition(obj(k8s, "consortiumnodes", NODE), "Reverified")
            return c if c and c["status"] == "False" else None

        failed = await wait_for(drifted, 30, "Reverified=False")
        assert failed["reason"] == "PolicyDrift" and "host_data" in failed["message"], failed
        stale = attested_at(k8s)
        await wait_for(lambda: warnings(k8s), 10, "a Warning Event")
        # Later passes re-check and fail again: no new lastAttestationTime, and one Event for one failure.
        await asyncio.sleep(3)  # three intervals, six member passes
        assert attested_at(k8s) == stale
        assert metrics.reverified("PolicyDrift") >= drifts + 2  # checked again, reported once
        events = warnings(k8s)
        assert len(events) == 1 and events[0]["type"] == "Warning" and "host_data" in events[0]["message"]
        # The operator proposes nothing about the drifted node: retiring it is the members' decision.
        async with Client(net.gateway_url) as c:
            opened = await c.proposals("Open")
        assert not [p for p in opened if any(a["name"] == "retire_node" for a in p["actions"])]
    finally:
        await set_policy(net, POLICY)
    await wait_for(
        lambda: (condition(obj(k8s, "consortiumnodes", NODE), "Reverified") or {}).get("status") == "True",
        30,
        "Reverified=True once the policy is back",
    )
