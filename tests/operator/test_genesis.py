"""Before the ledger exists: two operator replicas reconcile the same founding members at once and
write one genesis, the founding executor alone is started with it, and what it says comes from the
Consortium's spec and the members' public keys (never a private key)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conclavium_operator.genesis import measurement_lines
from operator_harness import NAMESPACE, RVEmulator, condition, obj, url, wait_for

from conclavium.crypto.keys import PrivateKey
from conclavium.local.processes import free_port
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT

pytestmark = pytest.mark.timeout(120)


def _consortium() -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "Consortium",
        "metadata": {"name": "dev", "namespace": NAMESPACE},
        "spec": {
            "ledgerId": "local",
            "environment": "development",
            "tee": {"platforms": ["virtual"]},
            "foundingMembers": ["alpha", "beta"],
            "constitution": {
                "memberQuorum": "KOfN",
                "k": 2,
                "nodeTrust": "Vote",
                "commitQuorum": 2,
                "proposalTtl": "2h",
            },
        },
    }


def _member(name: str, pem: str, weight: int) -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumMember",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "consortiumRef": {"name": "dev"},
            "memberId": name,
            "role": "Voting",
            "weight": weight,
            "identity": {"keyAlgorithm": "Ed25519", "publicKeyPem": pem},
            "executors": 1,
            "sequencerStandbys": 1,
        },
    }


async def test_two_operator_replicas_write_one_genesis_for_the_founding_executor(
    k8s: RVEmulator, operator_for: Any
) -> None:
    no_ledger = f"http://127.0.0.1:{free_port()}"  # no executor exists before genesis: nothing answers
    await operator_for(no_ledger)
    await operator_for(no_ledger)
    await k8s.post(url("consortiums"), json=_consortium())
    keys = {"alpha": PrivateKey.generate(), "beta": PrivateKey.generate()}
    await k8s.post(url("consortiummembers"), json=_member("alpha", keys["alpha"].public_key.pem, 2))
    first = await wait_for(
        lambda: (
            obj(k8s, "configmaps", "dev-genesis") is None
            and condition(obj(k8s, "consortiummembers", "alpha"), "Admitted")
        ),
        20,
        "alpha waiting",
    )
    assert first["reason"] == "AwaitingGenesis" and "beta" in first["message"]  # beta is not declared yet
    await k8s.post(url("consortiummembers"), json=_member("beta", keys["beta"].public_key.pem, 1))
    cm = await wait_for(lambda: obj(k8s, "configmaps", "dev-genesis"), 20, "the genesis ConfigMap")
    genesis = json.loads(cm["data"]["genesis.json"])
    assert genesis["ledger"] == "local"
    assert [(m["name"], m["public_key"], m["weight"]) for m in genesis["members"]] == [
        ("alpha", keys["alpha"].public_key.pem, 2),
        ("beta", keys["beta"].public_key.pem, 1),
    ]
    assert "PRIVATE" not in cm["data"]["genesis.json"]
    assert genesis["constitution"] == {
        "proposal_ttl_s": 7200,
        "auto_trust_nodes": False,
        "rules": {"default": {"proposers": "members", "accept": {"rule": "k_of_n", "k": 2}}},
    }
    assert genesis["commit_quorum"] == 2
    assert genesis["node_policy"] == {"environment": "development", "platforms": ["virtual"]}
    assert genesis["measurements"] == [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}]
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "Consortium"
    for name in ("alpha-executor-0", "beta-executor-0", "alpha-sequencer-0", "beta-sequencer-0"):
        await wait_for(lambda n=name: obj(k8s, "statefulsets", n), 20, f"StatefulSet {name}")
    commands = {
        n: obj(k8s, "statefulsets", n)["spec"]["template"]["spec"]["containers"][0]["command"]  # type: ignore[index]
        for n in ("alpha-executor-0", "beta-executor-0")
    }
    assert "--genesis" in commands["alpha-executor-0"] and "--genesis" not in commands["beta-executor-0"]
    volumes = obj(k8s, "statefulsets", "alpha-executor-0")["spec"]["template"]["spec"]["volumes"]  # type: ignore[index]
    assert {"name": "genesis", "configMap": {"name": "dev-genesis"}} in volumes
    # Both replicas kept reconciling: still one genesis, never rewritten.
    history = [v for v in k8s.objects["v1/configmaps", NAMESPACE, "dev-genesis", :] if v is not None]
    assert len(history) == 1, history


def test_measurement_lines() -> None:
    assert measurement_lines("# allowed\nABCD\n\n  ef01  # second\n") == ["abcd", "ef01"]
