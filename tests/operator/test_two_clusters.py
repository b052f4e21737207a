"""Two Kubernetes clusters on one ledger (two kmock API servers, two operators, one real local network).

Cluster `west` holds the membership of a new member, delta (`membership: Owned`), and one of its
executors; cluster `east` runs delta's other executor from the join bundle `conclavium k8s join-bundle`
prints (`membership: External`). The harness's PodRunner joins a node for every StatefulSet of each
cluster, as the executor pods would.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import kmock
import pytest
from ledger_helpers import join_node, proposal, service, vote
from operator_harness import NAMESPACE, OperatorThread, RVEmulator, load_resources, obj, url, wait_for
from test_operator import cond_is, member, secret, seed_alice
from test_upgrade import PodRunner

from conclavium.cli.main import main
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client

pytestmark = pytest.mark.timeout(300)


async def decide(net: LocalNetwork, proposal_id: str) -> str:
    """The local network's members approve one at a time until the proposal is decided (how many it
    takes depends on how many members the ledger has by then)."""
    for i in range(len(net.members)):
        if (await proposal(net, proposal_id))["state"] != "Open":
            break
        await vote(net, proposal_id, [i])
    return str((await proposal(net, proposal_id))["state"])


async def all_proposals(net: LocalNetwork) -> list[dict[str, Any]]:
    async with Client(net.gateway_url) as c:
        return list(await c.proposals())


def about(proposals: list[dict[str, Any]], action: str, /, **args: str) -> list[dict[str, Any]]:
    """Proposals with an `action` whose arguments include `args`."""
    return [
        p
        for p in proposals
        if any(a["name"] == action and (a.get("args") or {}).items() >= args.items() for a in p["actions"])
    ]


async def join_bundle(net: LocalNetwork, west: RVEmulator, out: Path, pub: Path) -> dict[str, Any]:
    """`conclavium k8s join-bundle` for delta in cluster east, from west's Consortium object."""
    cons = out / "consortium.json"
    cons.write_text(json.dumps(obj(west, "consortiums", "demo")))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "conclavium.cli.main", "--gateway", net.gateway_url, "k8s", "join-bundle",
        "--consortium-object", str(cons), "--member", "delta", "--public-key", str(pub),
        "--cluster-id", "east", "--nats-url", net.nats_url, "--in-cluster-signing", "--out", str(out / "bundle"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    return dict(json.loads(stdout))


async def test_two_clusters_one_set_member_external_nodes_join_and_retire_alone(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any, tmp_path: Path
) -> None:
    await operator_for(net.gateway_url, cluster_id="west")
    await seed_alice(k8s, net, executors=0)
    await wait_for(lambda: cond_is(k8s, "consortiummembers", "alice", "Admitted", "True"), 30, "alice admitted")
    delta_key = PrivateKey.generate()
    pub = tmp_path / "delta.pub.pem"
    pub.write_text(delta_key.public_key.pem)
    bundle = await join_bundle(net, k8s, tmp_path, pub)
    assert bundle["member_active"] is False and bundle["key_id"] == delta_key.public_key.key_id
    values = json.loads(Path(bundle["values"]).read_text())
    assert values == {"ledgerId": "local", "clusterId": "east", "nats": {"url": net.nats_url}}
    assert Path(bundle["service_cert"]).read_text() == (await service(net))["service_cert"]
    items = json.loads(Path(bundle["resources"]).read_text())["items"]
    assert [i["kind"] for i in items] == ["Consortium", "ConsortiumMember"]
    assert items[1]["spec"]["membership"] == "External" and items[1]["spec"]["memberId"] == "delta"

    async with RVEmulator() as east, kmock.Server(east):
        load_resources(east)
        east_op = OperatorThread(east, net.gateway_url, cluster_id="east")
        await east_op.start()
        try:
            async with PodRunner(k8s, net), PodRunner(east, net):
                await east.post(url("secrets"), json=secret("delta-identity", {
                    "tls.crt": delta_key.public_key.pem, "private.key": delta_key.pem.decode(),
                }))  # fmt: skip
                for item in items:
                    item["metadata"]["namespace"] = NAMESPACE
                    plural = {"Consortium": "consortiums", "ConsortiumMember": "consortiummembers"}[item["kind"]]
                    await east.post(url(plural), json=item)
                await wait_for(
                    lambda: cond_is(
                        east, "consortiummembers", "delta", "Admitted", "False", "AwaitingExternalAdmission"
                    ),
                    30,
                    "east waits for the admission made elsewhere",
                )
                assert obj(east, "consortiumnodes", "delta-east-executor-0") is None, "no node before admission"
                identity = {"keyAlgorithm": "Ed25519", "publicKeyPem": delta_key.public_key.pem}
                await k8s.post(url("consortiummembers"), json=member("delta", identity, executors=1))
                (pending,) = await wait_for(lambda: _open(net, "set_member", name="delta"), 30, "west's set_member")
                await asyncio.sleep(2)  # several passes of both operators
                assert len(about(await all_proposals(net), "set_member", name="delta")) == 1
                await wait_for(
                    lambda: cond_is(east, "consortiummembers", "delta", "Admitted", "False", "VotePending"), 30, "shown"
                )
                shown = obj(east, "consortiummembers", "delta")["status"]["proposal"]  # type: ignore[index]
                assert shown["id"] == pending["proposal_id"] and shown["action"] == "set_member"
                assert obj(east, "consortiumnodes", "delta-east-executor-0") is None, "no node before admission"
                assert await decide(net, pending["proposal_id"]) == "Accepted"

                for cluster, name in ((k8s, "delta-west-executor-0"), (east, "delta-east-executor-0")):
                    await wait_for(
                        lambda c=cluster, n=name: cond_is(c, "consortiumnodes", n, "Trusted", "True"), 60, f"{name}"
                    )
                assert cond_is(east, "consortiummembers", "delta", "Admitted", "True")
                assert obj(k8s, "consortiumnodes", "delta-east-executor-0") is None
                assert obj(east, "consortiumnodes", "delta-west-executor-0") is None
                east_id = obj(east, "consortiumnodes", "delta-east-executor-0")["status"]["nodeId"]  # type: ignore[index]
                west_id = obj(k8s, "consortiumnodes", "delta-west-executor-0")["status"]["nodeId"]  # type: ignore[index]
                assert len(about(await all_proposals(net), "set_member", name="delta")) == 1

                # Deleting the External member in east retires east's node only; delta stays a member.
                await east.delete(url("consortiummembers", "delta"))
                (retire,) = await wait_for(lambda: _open(net, "retire_node", node_id=east_id), 30, "east's retire_node")
                assert retire["actions"] == [{"name": "retire_node", "args": {"node_id": east_id}}]
                await asyncio.sleep(2)  # several passes: still one, and none for west's node
                assert len(await _open(net, "retire_node", node_id=east_id)) == 1
                assert await _open(net, "retire_node", node_id=west_id) == []
                assert await decide(net, retire["proposal_id"]) == "Accepted"
                await wait_for(lambda: obj(east, "consortiummembers", "delta") is None, 60, "east's delta released")
                assert obj(east, "consortiumnodes", "delta-east-executor-0") is None
                ledger = await service(net)
                assert delta_key.public_key.key_id in {m["id"] for m in ledger["members"]}
                status = {n["id"]: n["status"] for n in ledger["nodes"]}
                assert (status[east_id], status[west_id]) == ("Retired", "Trusted")
                proposals = await all_proposals(net)
                assert not about(proposals, "remove_member", member_id=delta_key.public_key.key_id)
                assert about(proposals, "retire_node", node_id=west_id) == []
                assert cond_is(k8s, "consortiumnodes", "delta-west-executor-0", "Trusted", "True")

                # The Owned member in west: its deletion removes delta and retires west's node.
                await k8s.delete(url("consortiummembers", "delta"))
                voted: set[str] = set()

                async def removed() -> bool:
                    for p in await _open_about(net, delta_key.public_key.key_id, west_id):
                        if p["proposal_id"] not in voted:
                            voted.add(p["proposal_id"])
                            await decide(net, p["proposal_id"])
                    return obj(k8s, "consortiummembers", "delta") is None

                await wait_for(removed, 90, "west's delta removed", interval=0.5)
                assert delta_key.public_key.key_id not in {m["id"] for m in (await service(net))["members"]}
        finally:
            await east_op.stop()


async def _open(net: LocalNetwork, action: str, /, **args: str) -> list[dict[str, Any]]:
    async with Client(net.gateway_url) as c:
        return about(await c.proposals("Open"), action, **args)


async def _open_about(net: LocalNetwork, key_id: str, node_id: str) -> list[dict[str, Any]]:
    return [*await _open(net, "remove_member", member_id=key_id), *await _open(net, "retire_node", node_id=node_id)]


async def test_deleting_an_orphan_member_proposes_nothing(
    net: LocalNetwork, k8s: RVEmulator, operator_for: Any
) -> None:
    """`deletionPolicy: Orphan`: the member and its trusted node go from the cluster at once; the ledger
    keeps both (no remove_member, no retire_node)."""
    await operator_for(net.gateway_url, cluster_id="orphan")
    await seed_alice(k8s, net, executors=1, deletionPolicy="Orphan")
    node = "alice-orphan-executor-0"
    await wait_for(lambda: obj(k8s, "consortiumnodes", node), 30, "alice's node")
    node_id = await join_node(net, node)
    await wait_for(lambda: cond_is(k8s, "consortiumnodes", node, "Trusted", "True"), 30, "trusted")
    before = {p["proposal_id"] for p in await all_proposals(net)}

    await k8s.delete(url("consortiummembers", "alice"))
    await wait_for(lambda: obj(k8s, "consortiummembers", "alice") is None, 30, "the member released")
    await wait_for(lambda: obj(k8s, "consortiumnodes", node) is None, 30, "its node released")
    await asyncio.sleep(2)  # a pass that would propose has had its chance
    assert [p for p in await all_proposals(net) if p["proposal_id"] not in before] == []
    ledger = await service(net)
    assert net.member_key(0).key_id in {m["id"] for m in ledger["members"]}
    assert {n["id"]: n["status"] for n in ledger["nodes"]}[node_id] == "Trusted"
    async with Client(net.gateway_url, net.member_key(0)) as c:  # the members retire it themselves
        submitted = await c.propose([{"name": "retire_node", "args": {"node_id": node_id}}])
        assert (await c.wait(submitted["tx_hash"]))["status"] == "Committed"
    assert await decide(net, submitted["proposal_id"]) == "Accepted"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--cluster-id", "East_1"], "--cluster-id 'East_1'"),
        (["--member", "Delta"], "--member 'Delta'"),
        (["--consortium-object", "missing.json"], "No such file"),
        (["--consortium-object", "not-a-consortium.json"], "is not a Consortium object"),
        (["--public-key", "not-a-consortium.json"], "is not a public key"),
    ],
)
def test_join_bundle_refuses_bad_input_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], change: list[str], message: str
) -> None:
    """Refused before the gateway is asked (exit 2, one line on stderr)."""
    monkeypatch.chdir(tmp_path)
    Path("not-a-consortium.json").write_text('{"kind": "ConfigMap"}')
    Path("cons.json").write_text('{"kind": "Consortium", "metadata": {"name": "demo"}, "spec": {"ledgerId": "x"}}')
    Path("delta.pub.pem").write_text(PrivateKey.generate().public_key.pem)
    options = {
        "--consortium-object": "cons.json",
        "--member": "delta",
        "--public-key": "delta.pub.pem",
        "--cluster-id": "east",
        "--nats-url": "nats://127.0.0.1:1",
        "--out": "bundle",
    }
    options[change[0]] = change[1]
    argv = ["--gateway", "http://127.0.0.1:1", "k8s", "join-bundle", *(x for kv in options.items() for x in kv)]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("conclavium: ") and message in err and "\n" not in err
    assert not Path("bundle").exists()
