"""The operator against kmock (Kubernetes API emulator) and a real local ledger behind its gateway."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from conclavium_operator import metrics
from conclavium_operator.children import COMPONENT, MANAGED_BY, PART_OF
from ledger_helpers import join_node, member_pem, proposal, service, vote
from operator_harness import NAMESPACE, RVEmulator, condition, obj, url, wait_for

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import free_port
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(120)
LABELS = {PART_OF: "conclavium", MANAGED_BY: "conclavium-operator"}
SECURITY = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True}


def consortium(name: str = "demo", ledger: str = "local") -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "Consortium",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "ledgerId": ledger,
            "environment": "development",
            "tee": {"platforms": ["virtual"]},
        },
    }


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NAMESPACE}, "data": encoded}


def member(name: str, identity: dict[str, Any], executors: int = 1, standbys: int = 0, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumMember",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "consortiumRef": {"name": "demo"},
            "memberId": name,
            "role": "Voting",
            "identity": identity,
            "executors": executors,
            "sequencerStandbys": standbys,
            "storage": {"size": "1Gi"},
            **spec,
        },
    }


async def seed_alice(k8s: RVEmulator, net: LocalNetwork, **spec: Any) -> None:
    """The Consortium, and alice (a genesis member) letting the operator propose with her key."""
    cert, key = member_pem(net, 0)
    await k8s.post(url("consortiums"), json=consortium())
    await k8s.post(url("secrets"), json=secret("alice-identity", {"tls.crt": cert, "private.key": key}))
    identity = {
        "keyAlgorithm": "Ed25519",
        "secretRef": {"name": "alice-identity", "certificateKey": "tls.crt", "privateKeyKey": "private.key"},
        "inClusterSigning": True,
    }
    await k8s.post(url("consortiummembers"), json=member("alice", identity, **spec))


def cond_is(k8s: RVEmulator, plural: str, name: str, type_: str, status: str, reason: str | None = None) -> bool:
    c = condition(obj(k8s, plural, name), type_)
    return c is not None and c["status"] == status and (reason is None or c["reason"] == reason)


def owned_by(child: dict[str, Any] | None, owner: dict[str, Any] | None) -> bool:
    assert child is not None and owner is not None
    refs = child["metadata"].get("ownerReferences") or []
    return [(r["kind"], r["name"], r["uid"], r["controller"]) for r in refs] == [
        (owner["kind"], owner["metadata"]["name"], owner["metadata"]["uid"], True)
    ]


async def test_consortium_and_member_produce_nodes_and_children(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    await operator_for(net.gateway_url)
    await seed_alice(k8s, net, executors=1, standbys=1)

    await wait_for(lambda: cond_is(k8s, "consortiums", "demo", "Ready", "True"), 20, "Consortium Ready")
    cons = obj(k8s, "consortiums", "demo")
    assert cons is not None
    assert cons["status"]["admittedMembers"] >= 3 and cons["status"]["trustedExecutors"] >= 3
    assert len(cons["status"]["serviceCertificateFingerprint"]) == 64
    assert cons["metadata"].get("finalizers", []) == [], "no governance step, so no finalizer on a Consortium"
    for component in ("executor", "sequencer"):
        pdb = await wait_for(lambda c=component: obj(k8s, "poddisruptionbudgets", f"demo-{c}s"), 20, "PDB")
        assert owned_by(pdb, cons) and pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"].items() >= {**LABELS, COMPONENT: component}.items()

    await wait_for(lambda: cond_is(k8s, "consortiummembers", "alice", "Admitted", "True", "AlreadyMember"), 20, "alice")
    alice = obj(k8s, "consortiummembers", "alice")
    assert alice is not None
    assert cond_is(k8s, "consortiummembers", "alice", "IdentityValid", "True", "Valid")
    assert alice["metadata"]["finalizers"] == ["conclavium.io/finalizer"]
    assert not any(k.startswith("kopf.zalando.org") for k in alice["metadata"].get("annotations", {}))
    assert "kopf" not in alice["status"], "kopf's progress stays out of status"

    names = {"alice-executor-0": "executor", "alice-sequencer-0": "sequencer"}
    for name, component in names.items():
        await wait_for(lambda n=name: obj(k8s, "statefulsets", n), 20, f"StatefulSet {name}")
        node = obj(k8s, "consortiumnodes", name)
        assert owned_by(node, alice)
        claim = f"data-{name}-{node['metadata']['uid'][:8]}"  # type: ignore[index]
        await wait_for(
            lambda n=name: (obj(k8s, "consortiumnodes", n) or {}).get("status", {}).get("claimName"), 20, "claim"
        )
        assert obj(k8s, "consortiumnodes", name)["status"]["claimName"] == claim  # type: ignore[index]
        sts, svc, pvc = (
            obj(k8s, "statefulsets", name),
            obj(k8s, "services", name),
            obj(k8s, "persistentvolumeclaims", claim),
        )
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]  # type: ignore[index]
        pdb = obj(k8s, "poddisruptionbudgets", f"demo-{component}s")
        assert pdb is not None and pod_labels.items() >= pdb["spec"]["selector"]["matchLabels"].items()
        for child in (sts, svc):
            assert owned_by(child, node), (name, child)
        assert pvc is not None and pvc["metadata"]["ownerReferences"] == [], "kept when the node goes (no deleteClaim)"
        for child in (sts, svc, pvc):
            assert child is not None and child["metadata"]["labels"].items() >= {**LABELS, COMPONENT: component}.items()
        assert sts is not None and svc is not None and pvc is not None
        assert sts["spec"]["replicas"] == 1
        pod = sts["spec"]["template"]
        assert pod["metadata"]["labels"].items() >= {**LABELS, COMPONENT: component}.items()
        (container,) = pod["spec"]["containers"]
        assert container["ports"] == [
            {"name": "metrics", "containerPort": 9100 if component == "executor" else 9200, "protocol": "TCP"}
        ]
        assert container["securityContext"].items() >= SECURITY.items() and container["securityContext"][
            "capabilities"
        ] == {"drop": ["ALL"]}
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert {"name": "CONCLAVIUM_NODE_NAME", "value": name} in container["env"]
        assert {"name": "data", "persistentVolumeClaim": {"claimName": claim}} in pod["spec"]["volumes"]
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["ports"][0]["name"] == "metrics"
        assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert obj(k8s, "consortiumnodes", "alice-executor-0")["spec"]["tee"]["platform"] == "virtual"  # type: ignore[index]

    # The node's pod and the ledger: until the pod is ready and the node joined, the member is not Ready.
    assert cond_is(k8s, "consortiummembers", "alice", "Ready", "False")
    for name in names:
        await k8s.patch(url("statefulsets", name, "status"), json={"status": {"readyReplicas": 1}})
    node_id = await join_node(net, "alice-executor-0")
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "alice", "Ready", "True", "MemberReady"), 30, "alice Ready"
    )
    alice = obj(k8s, "consortiummembers", "alice")
    assert alice is not None and alice["status"]["nodesReady"] == "2/2" and alice["status"]["phase"] == "Ready"
    assert cond_is(k8s, "consortiummembers", "alice", "Attested", "True", "AllExecutorsAttested")
    node = obj(k8s, "consortiumnodes", "alice-executor-0")
    assert node is not None and node["status"]["nodeId"] == node_id and node["status"]["phase"] == "Trusted"
    # No process runs as alice-executor-0 here (the test published its join), so the gateway has seen no
    # heights from it; and the lease is held by the local network's own sequencer, not alice's standby.
    assert "executedHeight" not in node["status"] and "committedHeight" not in node["status"]
    await wait_for(
        lambda: (obj(k8s, "consortiumnodes", "alice-sequencer-0") or {}).get("status", {}).get("phase") == "Standby",
        20,
        "alice's sequencer Standby",
    )
    assert condition(obj(k8s, "consortiumnodes", "alice-sequencer-0"), "LeaseHeld")["reason"] == "Standby"  # type: ignore[index]
    assert metrics.value("ConsortiumMember", "ok") > 0


async def test_new_member_is_proposed_admitted_by_vote_scaled_and_removed(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    await operator_for(net.gateway_url)
    await seed_alice(k8s, net, executors=0)
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "alice", "Admitted", "True"), 20, "alice admitted")

    dave_key = PrivateKey.generate()
    identity = {"keyAlgorithm": "Ed25519", "publicKeyPem": dave_key.public_key.pem}
    await k8s.post(url("consortiummembers"), json=member("dave", identity, executors=1))
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "dave", "Admitted", "False", "VotePending"), 20, "proposal"
    )
    dave = obj(k8s, "consortiummembers", "dave")
    assert dave is not None
    pid = dave["status"]["proposalId"]
    assert dave["status"]["phase"] == "Proposed"
    p = await proposal(net, pid)
    assert p["state"] == "Open" and p["proposer"] == net.member_key(0).key_id
    assert [a["name"] for a in p["actions"]] == ["set_member"] and p["actions"][0]["args"]["name"] == "dave"
    assert obj(k8s, "consortiumnodes", "dave-executor-0") is None, "no nodes before the vote"
    active = (await service(net))["members"]
    shown = await wait_for(
        lambda: (obj(k8s, "consortiummembers", "dave") or {}).get("status", {}).get("proposal"), 20, "status.proposal"
    )
    assert shown["id"] == pid and shown["action"] == "set_member" and shown["state"] == "Open"
    assert (shown["approvals"], shown["rejections"], shown["required"]) == (0, 0, len(active) // 2 + 1)
    assert sorted(shown["pendingVoters"]) == sorted(m["name"] for m in active)
    assert shown["expiresAt"].endswith("Z")
    assert obj(k8s, "consortiummembers", "dave")["status"]["votes"] == f"0/{len(active) // 2 + 1}"  # type: ignore[index]
    await vote(net, pid, [1])
    await wait_for(
        lambda: (
            (obj(k8s, "consortiummembers", "dave") or {}).get("status", {}).get("proposal", {}).get("approvals") == 1
        ),
        20,
        "one approval shown",
    )
    assert net.members[1]["name"] not in obj(k8s, "consortiummembers", "dave")["status"]["proposal"]["pendingVoters"]  # type: ignore[index]

    assert (await vote(net, pid, [2]))["state"] == "Accepted"
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "dave", "Admitted", "True", "ProposalAccepted"), 20, "Admitted"
    )
    await wait_for(lambda: obj(k8s, "statefulsets", "dave-executor-0"), 20, "dave's node")
    assert obj(k8s, "consortiummembers", "dave")["status"]["proposalId"] == pid  # type: ignore[index]
    assert len([x for x in (await proposal(net, pid))["actions"]]) == 1

    # Scale up: a second executor.
    await k8s.patch(url("consortiummembers", "dave"), json={"spec": {"executors": 2}})
    await wait_for(lambda: obj(k8s, "statefulsets", "dave-executor-1"), 20, "scale up")
    await wait_for(
        lambda: (obj(k8s, "consortiummembers", "dave") or {}).get("status", {}).get("desiredNodes") == 2, 20, "2"
    )

    # Scale down a node that joined the ledger: a retire_node proposal, the vote, then the node goes.
    node_id = await join_node(net, "dave-executor-1")
    await wait_for(lambda: cond_is(k8s, "consortiumnodes", "dave-executor-1", "Trusted", "True"), 30, "node trusted")
    await k8s.patch(url("consortiummembers", "dave"), json={"spec": {"executors": 1}})
    await wait_for(
        lambda: (
            (obj(k8s, "consortiumnodes", "dave-executor-1") or {})
            .get("metadata", {})
            .get("annotations", {})
            .get("conclavium.io/proposal")
        ),
        20,
        "retire_node proposal",
    )
    node = obj(k8s, "consortiumnodes", "dave-executor-1")
    assert node is not None and node["spec"]["retire"] is True
    retire_pid = node["metadata"]["annotations"]["conclavium.io/proposal"]
    p = await proposal(net, retire_pid)
    assert p["actions"] == [{"name": "retire_node", "args": {"node_id": node_id}}]
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "dave", "NodesReady", "False", "ScalingDown"), 20, "ScalingDown"
    )
    assert (await vote(net, retire_pid, [0, 1, 2]))["state"] == "Accepted"
    await wait_for(lambda: obj(k8s, "consortiumnodes", "dave-executor-1") is None, 20, "retired node deleted")
    assert obj(k8s, "consortiumnodes", "dave-executor-0") is not None
    assert any(n["id"] == node_id and n["status"] == "Retired" for n in (await service(net))["nodes"])

    # Deletion: the finalizer proposes remove_member and keeps the member until the vote.
    await k8s.delete(url("consortiummembers", "dave"))
    await wait_for(
        lambda: (
            (obj(k8s, "consortiummembers", "dave") or {})
            .get("metadata", {})
            .get("annotations", {})
            .get("conclavium.io/proposal")
        ),
        20,
        "remove_member proposal",
    )
    remove_pid = obj(k8s, "consortiummembers", "dave")["metadata"]["annotations"]["conclavium.io/proposal"]  # type: ignore[index]
    assert (await proposal(net, remove_pid))["actions"] == [
        {"name": "remove_member", "args": {"member_id": dave_key.public_key.key_id}}
    ]
    await wait_for(lambda: obj(k8s, "consortiumnodes", "dave-executor-0") is None, 20, "nodes retired first")
    dave = obj(k8s, "consortiummembers", "dave")
    assert dave is not None and dave["metadata"]["finalizers"] == ["conclavium.io/finalizer"]
    assert dave["status"]["phase"] == "Removing"
    assert (await vote(net, remove_pid, [0, 1, 2]))["state"] == "Accepted"
    await wait_for(lambda: obj(k8s, "consortiummembers", "dave") is None, 20, "finalizer released")
    assert dave_key.public_key.key_id not in {m["id"] for m in (await service(net))["members"]}


async def test_malformed_specs_become_conditions_not_crash_loops(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    await operator_for(net.gateway_url)
    await seed_alice(k8s, net, executors=0)
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "alice", "Admitted", "True"), 20, "alice admitted")

    def fresh_pem() -> str:
        return PrivateKey.generate().public_key.pem

    cases = {
        "bad-count": (
            member("bad-count", {"keyAlgorithm": "Ed25519", "publicKeyPem": fresh_pem()}, executors="many"),  # type: ignore[arg-type]
            "Ready",
            "InvalidCount",
        ),
        "bad-key": (
            member("bad-key", {"keyAlgorithm": "Ed25519", "publicKeyPem": "-----BEGIN PUBLIC KEY-----\nAAAA\n"}),
            "IdentityValid",
            "InvalidPublicKey",
        ),
        "private-inline": (
            member("private-inline", {"keyAlgorithm": "Ed25519", "publicKeyPem": PrivateKey.generate().pem.decode()}),
            "IdentityValid",
            "PrivateKeyInline",
        ),
        "wrong-alg": (
            member("wrong-alg", {"keyAlgorithm": "ECDSA-P256", "publicKeyPem": fresh_pem()}),
            "IdentityValid",
            "KeyAlgorithmMismatch",
        ),
        "bad-platform": (
            member("bad-platform", {"keyAlgorithm": "Ed25519", "publicKeyPem": fresh_pem()}, tee={"platform": "sgx"}),
            "Ready",
            "PlatformNotAllowed",
        ),
    }
    for body, _, _ in cases.values():
        await k8s.post(url("consortiummembers"), json=body)
    bad_consortium = consortium("prod-virtual")
    bad_consortium["spec"]["environment"] = "production"
    await k8s.post(url("consortiums"), json=bad_consortium)

    for name, (_, type_, reason) in cases.items():
        await wait_for(lambda n=name, t=type_, r=reason: cond_is(k8s, "consortiummembers", n, t, "False", r), 20, name)
    await wait_for(
        lambda: cond_is(k8s, "consortiums", "prod-virtual", "Ready", "False", "VirtualPlatformForbidden"),
        20,
        "bad Consortium",
    )
    first = {}
    for name in cases:
        body = obj(k8s, "consortiummembers", name)
        assert body is not None and body["status"]["phase"] == "Failed", name
        assert obj(k8s, "consortiumnodes", f"{name}-executor-0") is None
        first[name] = body["status"]["conditions"]
    assert not [p for p in await _open(net) if p["actions"][0]["args"].get("name") in cases], "nothing proposed"

    # Not a crash loop: handlers end normally on a spec error, so nothing is retried or counted as an
    # error while the timers keep polling (every 0.5 s here); the conditions stay exactly as they were.
    errors_before = metrics.value("ConsortiumMember", "error")
    await asyncio.sleep(2)
    assert metrics.value("ConsortiumMember", "error") == errors_before
    for name in cases:
        assert obj(k8s, "consortiummembers", name)["status"]["conditions"] == first[name], name  # type: ignore[index]

    # A missing Secret is transient: a TemporaryError retries until it appears, then the identity is valid.
    await k8s.post(
        url("consortiummembers"), json=member("no-secret", {"keyAlgorithm": "Ed25519", "secretRef": {"name": "late"}})
    )
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "no-secret", "IdentityValid", "False", "SecretNotFound"),
        20,
        "SecretNotFound",
    )
    assert obj(k8s, "consortiummembers", "no-secret")["status"]["phase"] == "Pending"  # type: ignore[index]
    await k8s.post(url("secrets"), json=secret("late", {"tls.crt": fresh_pem()}))
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "no-secret", "IdentityValid", "True"), 20, "recovered")
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "no-secret", "Admitted", "False", "VotePending"), 20, "proposed"
    )

    # No member of a consortium lets the operator sign: nothing can be proposed, and the reason says why.
    await k8s.post(url("consortiums"), json=consortium("other"))
    lonely = member("lonely", {"keyAlgorithm": "Ed25519", "publicKeyPem": fresh_pem()})
    lonely["spec"]["consortiumRef"]["name"] = "other"
    await k8s.post(url("consortiummembers"), json=lonely)
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "lonely", "Admitted", "False", "NoProposer"), 20, "NoProposer"
    )


async def test_unreachable_gateway_is_reported_and_retried(k8s: RVEmulator, operator_for: Any) -> None:
    await operator_for(f"http://127.0.0.1:{free_port()}")
    await k8s.post(url("consortiums"), json=consortium())
    identity = {"keyAlgorithm": "Ed25519", "publicKeyPem": PrivateKey.generate().public_key.pem}
    await k8s.post(url("consortiummembers"), json=member("erin", identity))
    await wait_for(
        lambda: cond_is(k8s, "consortiums", "demo", "GatewayReachable", "False", "GatewayUnavailable"), 20, "gw"
    )
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "erin", "Admitted", "Unknown", "GatewayUnavailable"), 20, "erin"
    )
    assert cond_is(k8s, "consortiummembers", "erin", "IdentityValid", "True")
    assert obj(k8s, "consortiums", "demo")["status"]["phase"] == "Pending"  # type: ignore[index]
    errors = metrics.value("ConsortiumMember", "error")
    await wait_for(lambda: metrics.value("ConsortiumMember", "error") > errors, 10, "retries counted as errors")


async def test_proposals_are_signed_for_the_consortiums_ledger(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    """A Consortium whose ledgerId is not the gateway's ledger: the operator's proposal names the
    Consortium's ledger, so this ledger refuses it (the member key may govern both) and says why.
    (The release is installed for that ledger, but its gateway serves another.)"""
    await operator_for(net.gateway_url, ledger="another-ledger")
    cert, key = member_pem(net, 0)
    await k8s.post(url("consortiums"), json=consortium(ledger="another-ledger"))
    await k8s.post(url("secrets"), json=secret("alice-identity", {"tls.crt": cert, "private.key": key}))
    identity = {
        "keyAlgorithm": "Ed25519",
        "secretRef": {"name": "alice-identity", "certificateKey": "tls.crt", "privateKeyKey": "private.key"},
        "inClusterSigning": True,
    }
    await k8s.post(url("consortiummembers"), json=member("alice", identity, executors=0))
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "alice", "Admitted", "True"), 20, "alice admitted")
    frank = {"keyAlgorithm": "Ed25519", "publicKeyPem": PrivateKey.generate().public_key.pem}
    await k8s.post(url("consortiummembers"), json=member("frank", frank, executors=0))
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "frank", "Admitted", "False", "ProposalRefused"), 20, "refused"
    )
    message = condition(obj(k8s, "consortiummembers", "frank"), "Admitted")["message"]  # type: ignore[index]
    assert "wrong_ledger" in message, message
    assert cond_is(k8s, "consortiums", "demo", "LedgerMatches", "False")
    assert not [p for p in await _open(net) if p["actions"][0]["args"].get("name") == "frank"]


async def _open(net: LocalNetwork) -> list[dict[str, Any]]:
    async with Client(net.gateway_url) as c:
        return await c.proposals("Open")


def test_metrics_endpoint_serves_reconcile_counter() -> None:
    """The chart scrapes CONCLAVIUM_OPERATOR_METRICS_PORT; the alert counts result="error"."""
    import urllib.request

    port = free_port()
    metrics.RECONCILES.labels("ConsortiumMember", "ok").inc(0)
    assert metrics.start(port) and not metrics.start(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'conclavium_operator_reconcile_total{kind="ConsortiumMember",result="ok"}' in text


def measurements_configmap(lines: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "demo-measurements", "namespace": NAMESPACE},
        "data": {"measurements": "# allowed launch digests\n" + "\n".join(lines) + "\n"},
    }


async def test_measurements_configmap_lines_become_allow_measurement_proposals(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    """After genesis a new ConfigMap line is one allow_measurement proposal (never two), the members'
    vote decides, and a rejected line is not proposed again until the ConfigMap changes."""
    first, second = os.urandom(48).hex(), os.urandom(48).hex()
    await k8s.post(url("configmaps"), json=measurements_configmap([first]))
    cons = consortium()
    cons["spec"]["tee"]["platforms"] = ["virtual", "sev-snp"]
    cons["spec"]["attestation"] = {"measurementsConfigMapRef": {"name": "demo-measurements"}}
    await operator_for(net.gateway_url)
    await k8s.post(url("consortiums"), json=cons)
    cert, key = member_pem(net, 0)
    await k8s.post(url("secrets"), json=secret("alice-identity", {"tls.crt": cert, "private.key": key}))
    identity = {
        "keyAlgorithm": "Ed25519",
        "secretRef": {"name": "alice-identity", "certificateKey": "tls.crt", "privateKeyKey": "private.key"},
        "inClusterSigning": True,
    }
    await k8s.post(url("consortiummembers"), json=member("alice", identity, executors=0))

    def proposal_id() -> str | None:
        return ((obj(k8s, "consortiums", "demo") or {}).get("metadata", {}).get("annotations") or {}).get(
            "conclavium.io/measurements-proposal"
        )

    await wait_for(lambda: cond_is(k8s, "consortiums", "demo", "MeasurementsAllowed", "False", "VotePending"), 30, "1")
    pid = proposal_id()
    assert pid is not None
    p = await proposal(net, pid)
    assert p["state"] == "Open" and p["proposer"] == net.member_key(0).key_id
    assert p["actions"] == [
        {"name": "allow_measurement", "args": {"platform": "snp", "measurement": first, "host_data": None}}
    ]
    await asyncio.sleep(2)  # several timer passes while the vote is open
    opened = [q for q in await open_proposals(net) if any(a["name"] == "allow_measurement" for a in q["actions"])]
    assert [q["proposal_id"] for q in opened] == [pid], "one proposal, however many passes"
    assert (await vote(net, pid, [1, 2]))["state"] == "Accepted"
    await wait_for(lambda: cond_is(k8s, "consortiums", "demo", "MeasurementsAllowed", "True", "AllAllowed"), 30, "2")
    async with Client(net.gateway_url) as c:
        assert (await c.get("public:gov.measurements", first))["platform"] == "snp"

    # A new line: a proposal for that line only; the members reject it, and it is not proposed again.
    await k8s.patch(url("configmaps", "demo-measurements"), json=measurements_configmap([first, second]))
    await wait_for(lambda: proposal_id() not in (None, pid), 30, "second proposal")
    pid2 = proposal_id()
    assert pid2 is not None
    assert [a["args"]["measurement"] for a in (await proposal(net, pid2))["actions"]] == [second]
    assert (await vote(net, pid2, [1, 2], approve=False))["state"] == "Rejected"
    await wait_for(
        lambda: cond_is(k8s, "consortiums", "demo", "MeasurementsAllowed", "False", "ProposalRejected"), 30, "3"
    )
    await asyncio.sleep(2)
    assert proposal_id() == pid2
    assert not [q for q in await open_proposals(net) if any(a["name"] == "allow_measurement" for a in q["actions"])]


async def open_proposals(net: LocalNetwork) -> list[dict[str, Any]]:
    async with Client(net.gateway_url) as c:
        return list(await c.proposals("Open"))


async def test_deleting_a_trusted_node_waits_for_its_retire_node_vote(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    """A direct delete of a ConsortiumNode (kubectl, Argo CD) keeps it behind the finalizer with exactly
    one open retire_node until the members vote; the node the member gets again under the same name is a
    new node (matched by node id), not the retired record."""
    await operator_for(net.gateway_url)
    await seed_alice(k8s, net, executors=2)
    await wait_for(lambda: obj(k8s, "consortiumnodes", "alice-executor-1"), 30, "node")
    node_id = await join_node(net, "alice-executor-1")
    await wait_for(lambda: cond_is(k8s, "consortiumnodes", "alice-executor-1", "Trusted", "True"), 30, "trusted")
    assert obj(k8s, "consortiumnodes", "alice-executor-1")["status"]["nodeId"] == node_id  # type: ignore[index]
    old_uid = obj(k8s, "consortiumnodes", "alice-executor-1")["metadata"]["uid"]  # type: ignore[index]
    old_claim = obj(k8s, "consortiumnodes", "alice-executor-1")["status"]["claimName"]  # type: ignore[index]

    await k8s.delete(url("consortiumnodes", "alice-executor-1"))

    def retiring() -> list[dict[str, Any]]:
        return [
            p for p in open_now if any(a == {"name": "retire_node", "args": {"node_id": node_id}} for a in p["actions"])
        ]

    open_now: list[dict[str, Any]] = []

    async def one_open() -> bool:
        open_now[:] = await open_proposals(net)
        return len(retiring()) == 1

    await wait_for(one_open, 30, "retire_node proposal")
    await asyncio.sleep(2)  # several passes of the finalizer and the member's timer
    await one_open()
    (pending,) = retiring()
    node = obj(k8s, "consortiumnodes", "alice-executor-1")
    assert node is not None and node["metadata"].get("deletionTimestamp"), "kept until the vote"
    assert "conclavium.io/finalizer" in node["metadata"]["finalizers"]
    assert node["metadata"]["uid"] == old_uid

    assert (await vote(net, pending["proposal_id"], [1, 2]))["state"] == "Accepted"
    await wait_for(
        lambda: (obj(k8s, "consortiumnodes", "alice-executor-1") or {}).get("metadata", {}).get("uid") != old_uid,
        30,
        "the retired node released (and the member's replacement created)",
    )
    assert any(n["id"] == node_id and n["status"] == "Retired" for n in (await service(net))["nodes"])
    await wait_for(
        lambda: cond_is(k8s, "consortiumnodes", "alice-executor-1", "Attested", "False", "NotJoined"), 30, "new node"
    )
    assert "nodeId" not in (obj(k8s, "consortiumnodes", "alice-executor-1") or {}).get("status", {})
    # The retired node's claim (its sealed keys and ledger copy) stays, unowned; the new node gets its own.
    kept = obj(k8s, "persistentvolumeclaims", old_claim)
    assert kept is not None and kept["metadata"]["ownerReferences"] == []
    await wait_for(
        lambda: (obj(k8s, "consortiumnodes", "alice-executor-1") or {}).get("status", {}).get("claimName"), 20, "claim"
    )
    new_node = obj(k8s, "consortiumnodes", "alice-executor-1")
    assert new_node is not None and new_node["status"]["claimName"] not in (old_claim, "data-alice-executor-1")
    sts = obj(k8s, "statefulsets", "alice-executor-1")
    assert sts is not None
    assert {"name": "data", "persistentVolumeClaim": {"claimName": new_node["status"]["claimName"]}} in sts["spec"][
        "template"
    ]["spec"]["volumes"]
    retired_events = [
        e
        for e in (obj(k8s, "events", n) for n in {key[2] for key in k8s.objects})
        if e and e.get("reason") == "NodeRetired" and e["involvedObject"]["uid"] == old_uid
    ]
    assert len(retired_events) == 1
