"""Receipts and commits need k distinct members, taken from the members' signed consortium identity.

Real processes: a local network of three members where alice runs three of the four executors and
bob the fourth (carol runs none), so alice's nodes alone reach the node quorum (3 of 4) but not the
member threshold (2 of 3). The attacks: one node's complete key material (its node key and the
ledger secrets, service key included) forging a receipt; a member with all its nodes forging or
committing alone; a retired node's later signature; a next identity signed by fewer than k
members. Time budget: about a minute per network on an idle machine.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest

from conclavium import consortium, merkle, receipt
from conclavium.block import leaf_data, statement
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e
from conclavium.governance import documents
from conclavium.local.network import LocalNetwork, start_network
from conclavium.sdk.client import Client
from tests.confidentiality.gateway_proxy import node_material

CLI = [sys.executable, "-m", "conclavium.cli.main"]
ALICE_NODES = ("executor-0", "executor-1", "executor-2")
BOB_NODE = "executor-3"


def _start(directory: Path) -> LocalNetwork:
    return start_network(directory, redis=False, executors=4, members=3, executor_members=[0, 0, 0, 1])


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    n = _start(tmp_path_factory.mktemp("identity"))
    yield n
    n.stop()


def _identity(net: LocalNetwork) -> consortium.Identity:
    return consortium.load_trusted((net.dir / "consortium.json").read_text())


def _user(net: LocalNetwork) -> PrivateKey:
    return PrivateKey.from_file(str(net.dir / net.users[0]["key"]))


async def _committed(net: LocalNetwork, key: str) -> dict[str, Any]:
    async with Client(net.gateway_url, _user(net), **net.trust()) as c:
        st = await c.wait(await c.put("public:identity", key, key), timeout=60)
        assert st["status"] == "Committed" and st["verified"], st
        return dict(st["receipt"])


def _nodes(net: LocalNetwork) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in net.service()["nodes"]}


def _verify_cli(net: LocalNetwork, r: dict[str, Any], tmp: Path, identity: Path | None = None) -> dict[str, Any]:
    (tmp / "r.json").write_text(json.dumps(r))
    p = subprocess.run(
        [*CLI, "receipt", "verify", str(tmp / "r.json"), "--consortium", str(identity or net.dir / "consortium.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = dict(json.loads(p.stdout))
    assert (p.returncode == 0) == out["valid"], p
    return out


def _signed(statement_bytes: bytes, key: PrivateKey, endorsement: str, node: str | None = None) -> dict[str, str]:
    return {
        "node": node or key.key_id,
        "signature": b64e(key.sign(statement_bytes)),
        "signing_key": key.public_key.pem,
        "endorsement": endorsement,
    }


def test_a_genuine_receipt_verifies_against_the_identity(net: LocalNetwork, tmp_path: Path) -> None:
    r = asyncio.run(_committed(net, "genuine"))
    v = receipt.verify(r, _identity(net), tx_hash=r["tx_hash"])
    nodes = _nodes(net)
    bob = net.member_key(1).key_id
    assert bob in v.members and len(v.members) >= 2
    assert nodes[BOB_NODE]["id"] in v.signers and nodes[BOB_NODE]["member"] == bob
    out = _verify_cli(net, r, tmp_path)
    assert out["valid"] and out["consortium_version"] == 1 and bob in out["members"]


def test_one_nodes_complete_key_material_cannot_forge_a_receipt(net: LocalNetwork, tmp_path: Path) -> None:
    """executor-0's node key and its ledger secrets (the service key among them) make a receipt for
    a transaction that never existed: quorum 1, its own genuine signature and endorsement, and
    self-minted nodes endorsed by the keys it holds (the service key, its node key)."""
    keys, secrets = node_material(net, "executor-0")
    node0 = _nodes(net)["executor-0"]
    tx = hashlib.sha256(b"a transaction that never existed").digest()
    digest = hashlib.sha256(b"whatever it wrote").digest()
    root = merkle.leaf_hash(leaf_data(tx, digest))
    height, bhash = net.service()["height"] + 1, hashlib.sha256(b"no such block").digest()
    ts_ms = int(time.time() * 1000)
    stmt = statement(net.opt.ledger, height, bhash, root, 1, ts_ms)
    forged = receipt.build(
        ledger=net.opt.ledger,
        height=height,
        index=0,
        tx_hash=tx,
        write_digest=digest,
        path=[],
        root=root,
        block_hash=bhash,
        quorum=1,
        ts_ms=ts_ms,
        signatures=[],
    )
    forged["signatures"] = [_signed(stmt, keys.signing, node0["member_endorsement"])]
    now = int(time.time())
    for signer in (secrets.service_key, keys.signing):  # the node "endorses" minted nodes as best it can
        minted = PrivateKey.generate()
        doc = consortium.make_node_endorsement(signer, net.opt.ledger, minted.public_key.pem, now)
        forged["signatures"].append(_signed(stmt, minted, b64e(doc)))
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(forged, _identity(net))
    assert e.value.code == "insufficient_signatures" and "not a member" in str(e.value)
    assert _verify_cli(net, forged, tmp_path)["code"] == "insufficient_signatures"
    # a minted key wearing a genuine member endorsement: the endorsement names another key
    minted = PrivateKey.generate()
    bob_node = _nodes(net)[BOB_NODE]
    forged["signatures"].append(_signed(stmt, minted, bob_node["member_endorsement"], node=bob_node["id"]))
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(forged, _identity(net))
    assert e.value.code == "untrusted_node"


def test_a_member_with_all_its_nodes_cannot_forge_a_receipt(net: LocalNetwork) -> None:
    """alice's three nodes sign a genuine block's statement, and a fake one: one member, refused."""
    genuine = asyncio.run(_committed(net, "alice-alone"))
    nodes = _nodes(net)
    alice_sigs = []
    stmt = statement(
        genuine["ledger"],
        genuine["height"],
        bytes.fromhex(genuine["block_hash"]),
        bytes.fromhex(genuine["root"]),
        genuine["quorum"],
        genuine["ts_ms"],
    )
    for name in ALICE_NODES:
        keys, _ = node_material(net, name)
        alice_sigs.append(_signed(stmt, keys.signing, nodes[name]["member_endorsement"]))
    only_alice = copy.deepcopy(genuine)
    only_alice["signatures"] = alice_sigs
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(only_alice, _identity(net))
    assert e.value.code == "insufficient_signatures" and "1 distinct member" in str(e.value)
    assert len(receipt.verify(genuine, _identity(net)).members) >= 2


def _readyz(net: LocalNetwork, name: str) -> dict[str, Any]:
    try:
        with urlopen(f"http://127.0.0.1:{net.procs[name].port}/readyz", timeout=3) as r:
            return dict(json.loads(r.read()))
    except Exception as e:  # 503 carries the reason in its body too
        body = getattr(e, "read", lambda: b"{}")()
        return dict(json.loads(body or b"{}"))


def _metric(net: LocalNetwork, name: str, metric: str) -> float:
    with urlopen(f"http://127.0.0.1:{net.procs[name].port}/metrics", timeout=3) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
    raise AssertionError(f"{metric} not exposed")


def test_nodes_of_one_member_do_not_commit_alone(net: LocalNetwork) -> None:
    """With bob's only node stopped, alice's three nodes are the node quorum but one member: the
    transaction stays Pending; once bob's node is back it commits."""
    assert _metric(net, "executor-0", "conclavium_executor_member_threshold") == 2
    assert _metric(net, "executor-0", "conclavium_executor_signing_members") == 2
    net.procs[BOB_NODE].stop()

    async def pending_then_committed() -> None:
        async with Client(net.gateway_url, _user(net), **net.trust()) as c:
            h = await c.put("public:identity", "while-bob-is-away", 1)
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                assert (await c.status(h))["status"] in ("Pending", "Unknown")
                await asyncio.sleep(0.5)
            net.procs[BOB_NODE].start()
            st = await c.wait(h, timeout=90)
            assert st["status"] == "Committed" and st["verified"]
            assert net.member_key(1).key_id in receipt.verify(st["receipt"], _identity(net)).members

    try:
        asyncio.run(pending_then_committed())
    finally:
        if not net.procs[BOB_NODE].alive():
            net.procs[BOB_NODE].start()
    net.wait_ready(60)


async def _govern(net: LocalNetwork, actions: list[dict[str, Any]], voters: int) -> dict[str, Any]:
    """Propose as alice and vote with the first `voters` members; the proposal's final record."""
    clients = [Client(net.gateway_url, net.member_key(i), ledger=net.opt.ledger) for i in range(voters)]
    try:
        proposed = await clients[0].propose(actions)
        await _executed(clients[0], proposed["tx_hash"])
        for c in clients:
            ballot = await c.vote(proposed["proposal_id"], approve=True)
            st = await _executed(c, ballot["tx_hash"])
            # read at least at the last ballot's height: an executor that lags may answer the read
            clients[0].seen_height = max(clients[0].seen_height, int(st.get("height") or 0))
        return await clients[0].proposal(proposed["proposal_id"])
    finally:
        for c in clients:
            await c.close()


async def _executed(c: Client, tx_hash: str, timeout: float = 60) -> dict[str, Any]:
    """Governance executes without waiting for a commit (a ledger that cannot commit can still be
    repaired by governance): Pending (executed), Committed or Invalid."""
    deadline = time.monotonic() + timeout
    while True:
        st = await c.status(tx_hash)
        if st["status"] in ("Committed", "Invalid") or (st["status"] == "Pending" and st.get("height")):
            return st
        if time.monotonic() > deadline:
            raise TimeoutError(st)
        await asyncio.sleep(0.1)


def _next(current: dict[str, Any], signers: list[PrivateKey], **changes: Any) -> dict[str, Any]:
    doc = consortium.next_identity(current, **changes)
    for key in signers:
        doc = consortium.sign(doc, key)
    return doc


def test_identity_versions_retirement_and_an_unreachable_threshold(tmp_path: Path) -> None:
    net = _start(tmp_path / "net")
    try:
        asyncio.run(_evolve(net, tmp_path))
    finally:
        net.stop()


async def _evolve(net: LocalNetwork, tmp: Path) -> None:
    v1 = json.loads((net.dir / "consortium.json").read_text())
    alice, bob, carol = (net.member_key(i) for i in range(3))
    async with Client(net.gateway_url, alice, ledger=net.opt.ledger) as c:
        # a next version signed by one member (k = 2) is refused, as is a membership change without one
        short = _next(v1, [alice], threshold=3)
        proposed = await c.propose([{"name": "set_consortium_identity", "args": {"identity": short}}])
        st = await _executed(c, proposed["tx_hash"])
        assert (st["status"], st["reason"]) == ("Invalid", "insufficient_signatures"), st
        stranger = PrivateKey.generate()
        forged = _next(v1, [alice, stranger], threshold=3)
        proposed = await c.propose([{"name": "set_consortium_identity", "args": {"identity": forged}}])
        st = await _executed(c, proposed["tx_hash"])
        assert st["status"] == "Invalid" and "insufficient_signatures" in json.dumps(st), st
        # set_member: the vote alone (ballots without a signature over the next identity) is not enough
        dave = PrivateKey.generate()
        add = [{"name": "set_member", "args": {"name": "dave", "public_key": dave.public_key.pem}}]
        proposed = await c.propose(add)
        await _executed(c, proposed["tx_hash"])
        pid = proposed["proposal_id"]
        for key in (alice, bob):
            ballot = documents.make_ballot(pid, True, key, int(time.time()), ledger=net.opt.ledger)
            await _executed(c, (await c._post_document(f"/v1/gov/proposals/{pid}/ballots", ballot))["tx_hash"])
        p = await c.proposal(proposed["proposal_id"])
        assert p["state"] == "Open" and "insufficient_signatures" in p["awaiting_identity"], p
        assert dave.key_id not in {m["id"] for m in net.service()["members"]}

    # retire one of alice's nodes in version 2, signed by alice and bob
    retired = _nodes(net)["executor-2"]
    retired_keys, _ = node_material(net, "executor-2")
    after = net.service()["height"]
    v2 = _next(v1, [alice, bob], retired_nodes=[{"node": retired["id"], "after_height": after}])
    p = await _govern(net, [{"name": "set_consortium_identity", "args": {"identity": v2}}], 2)
    assert p["state"] == "Accepted", p
    deadline = time.monotonic() + 20
    while _nodes(net)["executor-2"]["status"] != "Retired":  # (any executor answers: it may lag a little)
        assert time.monotonic() < deadline, _nodes(net)["executor-2"]
        await asyncio.sleep(0.3)
    while _metric(net, "executor-0", "conclavium_executor_signing_nodes") != 3:
        assert time.monotonic() < deadline, "the retired node still counts for commits"
        await asyncio.sleep(0.3)
    # a later genuine block: the retired node's signature over it counts under v1 (which does not
    # know of the retirement) but not under v2
    r = await _committed(net, "after-retirement")
    assert r["height"] > after
    stmt = statement(
        r["ledger"], r["height"], bytes.fromhex(r["block_hash"]), bytes.fromhex(r["root"]), r["quorum"], r["ts_ms"]
    )
    bob_sig = next(s for s in r["signatures"] if s["node"] == _nodes(net)[BOB_NODE]["id"])
    late = copy.deepcopy(r)
    late["signatures"] = [_signed(stmt, retired_keys.signing, retired["member_endorsement"]), bob_sig]
    assert receipt.verify(late, consortium.load(v1)).members == sorted([alice.key_id, bob.key_id])
    (tmp / "v2.json").write_text(json.dumps([v1, v2]))  # a chain: v1 trusted, v2 verified against it
    out = _verify_cli(net, late, tmp, tmp / "v2.json")
    assert not out["valid"] and out["code"] == "insufficient_signatures" and "retired" in out["reason"]
    assert _verify_cli(net, r, tmp, tmp / "v2.json")["valid"]

    # version 3 needs all three members; carol runs no node, so nothing can commit: said so
    v3 = _next(v2, [alice, bob], threshold=3)
    p = await _govern(net, [{"name": "set_consortium_identity", "args": {"identity": v3}}], 2)
    assert p["state"] == "Accepted", p
    deadline = time.monotonic() + 20
    while "quorum_unreachable" not in str(_readyz(net, "executor-0").get("reason")):
        assert time.monotonic() < deadline, _readyz(net, "executor-0")
        await asyncio.sleep(0.3)
    assert _metric(net, "executor-0", "conclavium_executor_quorum_unreachable") == 1
    # governance still executes: version 4, signed by all three (v3's threshold), repairs it
    v4 = _next(v3, [alice, bob, carol], threshold=2)
    p = await _govern(net, [{"name": "set_consortium_identity", "args": {"identity": v4}}], 2)
    assert p["state"] == "Accepted", p
    deadline = time.monotonic() + 20
    while net.service()["consortium"]["identity"]["version"] != 4:  # any executor answers: it may lag
        assert time.monotonic() < deadline, net.service()["consortium"]["identity"]["version"]
        await asyncio.sleep(0.3)
    (net.dir / "consortium.json").write_text(json.dumps(v4))
    r = await _committed(net, "repaired")
    assert receipt.verify(r, consortium.verify_chain([v1, v2, v3, v4])).height == r["height"]
    assert _metric(net, "executor-0", "conclavium_executor_quorum_unreachable") == 0
