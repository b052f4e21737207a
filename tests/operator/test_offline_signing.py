"""Members' keys stay with members: outside a development consortium the operator refuses in-cluster
signing (condition InClusterSigning=False, ForbiddenOutsideDevelopment) and proposes nothing with the
key it was offered; members sign proposals and ballots offline with the CLI and the operator only
forwards the documents handed over in ConfigMaps, verbatim, writing the ledger's verdict on them.
Against kmock and a real local ledger."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conclavium_operator import signed_documents as sd
from ledger_helpers import member_pem, proposal
from operator_harness import NAMESPACE, RVEmulator, condition, obj, url, wait_for
from test_operator import cond_is, consortium, member, secret

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(180)


def production() -> dict[str, Any]:
    body = consortium()
    body["spec"]["environment"] = "production"
    body["spec"]["tee"] = {"platforms": ["sev-snp"]}
    return body


def handed_over(name: str, document: bytes, consortium_name: str = "demo") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {sd.DOCUMENT_LABEL: consortium_name}},
        "binaryData": {sd.DOCUMENT_KEY: base64.b64encode(document).decode()},
    }


def annotations(k8s: RVEmulator, name: str) -> dict[str, str]:
    return dict(((obj(k8s, "configmaps", name) or {}).get("metadata") or {}).get("annotations") or {})


def sign_offline(key_file: Path, out: Path, *args: str, ledger: str = "local") -> None:
    """The CLI on a member's machine: signs with the member's key and writes the document; no gateway."""
    argv = [sys.executable, "-m", "conclavium.cli.main", "--key", str(key_file), "--ledger", ledger, *args]
    r = subprocess.run([*argv, "--sign-only", str(out)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()


async def open_proposals_adding(net: LocalNetwork, name: str) -> list[dict[str, Any]]:
    async with Client(net.gateway_url) as c:
        return [
            p for p in await c.proposals("Open") if any(a["args"].get("name") == name for a in p.get("actions", []))
        ]


async def test_production_members_sign_offline_and_the_operator_only_forwards(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any, tmp_path: Path
) -> None:
    await operator_for(net.gateway_url)
    cert, key = member_pem(net, 0)
    await k8s.post(url("consortiums"), json=production())
    await k8s.post(url("secrets"), json=secret("alice-identity", {"tls.crt": cert, "private.key": key}))
    offered = {
        "keyAlgorithm": "Ed25519",
        "secretRef": {"name": "alice-identity", "certificateKey": "tls.crt", "privateKeyKey": "private.key"},
        "inClusterSigning": True,
    }
    await k8s.post(url("consortiummembers"), json=member("alice", offered, executors=0))
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "alice", "InClusterSigning", "False", "ForbiddenOutsideDevelopment"),
        60,
        "in-cluster signing refused",
    )
    assert "--sign-only" in (condition(obj(k8s, "consortiummembers", "alice"), "InClusterSigning") or {})["message"]

    frank = PrivateKey.generate()
    frank_identity = {"keyAlgorithm": "Ed25519", "publicKeyPem": frank.public_key.pem}
    # a Participant (a user): the package's ledger keeps its three voting members for the other tests
    await k8s.post(url("consortiummembers"), json=member("frank", frank_identity, executors=0, role="Participant"))
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "frank", "Admitted", "False", "NoProposer"), 60, "frank")
    assert "governance-document" in (condition(obj(k8s, "consortiummembers", "frank"), "Admitted") or {})["message"]
    assert await open_proposals_adding(net, "frank") == [], "the operator signed nothing with alice's key"

    # alice signs the proposal on her own machine; the operator forwards the bytes
    (tmp_path / "frank.pub.pem").write_text(frank.public_key.pem)
    actions = {"actions": [{"name": "set_user", "args": {"name": "frank", "public_key": "@frank.pub.pem"}}]}
    (tmp_path / "add-frank.json").write_text(json.dumps(actions))
    signed = tmp_path / "add-frank.cose"
    alice_key, bob_key, carol_key = (net.dir / net.members[i]["key"] for i in range(3))
    await asyncio.to_thread(sign_offline, alice_key, signed, "gov", "propose", str(tmp_path / "add-frank.json"))
    assert await open_proposals_adding(net, "frank") == [], "signing offline submits nothing"
    await k8s.post(url("configmaps"), json=handed_over("add-frank", signed.read_bytes()))
    await wait_for(lambda: annotations(k8s, "add-frank").get(sd.RESULT_ANNOTATION) == "Committed", 60, "forwarded")
    pid = annotations(k8s, "add-frank")[sd.PROPOSAL_ANNOTATION]
    p = await proposal(net, pid)
    assert p["state"] == "Open" and p["proposer"] == net.member_key(0).key_id
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "frank", "Admitted", "False", "VotePending"), 60, "vote")

    # bob and carol vote offline too
    for voter, key_file in (("bob", bob_key), ("carol", carol_key)):
        ballot = tmp_path / f"{voter}.cose"
        await asyncio.to_thread(sign_offline, key_file, ballot, "gov", "vote", pid, "--approve")
        await k8s.post(url("configmaps"), json=handed_over(f"ballot-{voter}", ballot.read_bytes()))
        await wait_for(
            lambda v=voter: annotations(k8s, f"ballot-{v}").get(sd.RESULT_ANNOTATION) == "Committed", 30, voter
        )
    assert (await proposal(net, pid))["state"] == "Accepted"
    await wait_for(
        lambda: cond_is(k8s, "consortiummembers", "frank", "Admitted", "True", "ProposalAccepted"), 60, "admitted"
    )


async def test_documents_the_operator_cannot_forward_are_refused_on_the_config_map(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any, tmp_path: Path
) -> None:
    await operator_for(net.gateway_url)
    await k8s.post(url("consortiums"), json=production())
    alice_key = net.dir / net.members[0]["key"]
    (tmp_path / "p.json").write_text(json.dumps({"actions": [{"name": "open_service", "args": {}}]}))
    other = tmp_path / "other-ledger.cose"
    await asyncio.to_thread(sign_offline, alice_key, other, "gov", "propose", str(tmp_path / "p.json"), ledger="other")
    await k8s.post(url("configmaps"), json=handed_over("other-ledger", other.read_bytes()))
    await k8s.post(url("configmaps"), json=handed_over("garbage", b"\xa0not cose"))
    missing = handed_over("empty", b"")
    missing["binaryData"] = {}
    await k8s.post(url("configmaps"), json=missing)
    for name, reason in (("other-ledger", "WrongLedger"), ("garbage", "InvalidDocument"), ("empty", "DocumentMissing")):
        await wait_for(lambda n=name: annotations(k8s, n).get(sd.RESULT_ANNOTATION) == "Refused", 60, name)
        assert annotations(k8s, name)[sd.REASON_ANNOTATION].startswith(reason), annotations(k8s, name)
        assert sd.TX_ANNOTATION not in annotations(k8s, name)
    # a ballot the executors refuse (on a proposal that does not exist) is forwarded and ends Invalid
    ballot = tmp_path / "ballot.cose"
    await asyncio.to_thread(sign_offline, alice_key, ballot, "gov", "vote", "ab" * 32, "--approve")
    await k8s.post(url("configmaps"), json=handed_over("stray-ballot", ballot.read_bytes()))
    await wait_for(lambda: annotations(k8s, "stray-ballot").get(sd.RESULT_ANNOTATION) == "Invalid", 60, "invalid")
    assert annotations(k8s, "stray-ballot")[sd.TX_ANNOTATION]
