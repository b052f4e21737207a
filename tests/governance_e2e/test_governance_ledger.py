"""Governance through the real ledger: signed proposals and ballots over REST, applied by every
executor, with the outcomes and effects in the public tables."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from conclavium import consortium, cose, receipt
from conclavium.crypto.keys import PrivateKey
from conclavium.governance import documents
from conclavium.governance.constitution import default_constitution
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client, ClientError


@pytest.fixture(scope="module")
def gov_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    from conclavium.local.network import start_network

    net = start_network(tmp_path_factory.mktemp("gov"), redis=False)
    yield net
    net.stop()


class Members:
    def __init__(self, net: LocalNetwork) -> None:
        self.net = net
        self.clients = [Client(net.gateway_url, net.member_key(i)) for i in range(len(net.members))]

    async def close(self) -> None:
        for c in self.clients:
            await c.close()

    async def propose(self, actions: list[dict[str, Any]], by: int = 0) -> str:
        p = await self.clients[by].propose(actions)
        st = await self.clients[by].wait(p["tx_hash"])
        assert st["status"] == "Committed", st
        return str(p["proposal_id"])

    async def vote(self, pid: str, voters: list[int], approve: bool = True) -> dict[str, Any]:
        for i in voters:
            b = await self.clients[i].vote(pid, approve)
            st = await self.clients[i].wait(b["tx_hash"])
            assert st["status"] == "Committed", st
        return await self.clients[0].proposal(pid)

    async def decide(self, actions: list[dict[str, Any]], voters: list[int]) -> dict[str, Any]:
        return await self.vote(await self.propose(actions), voters)


@pytest.fixture
async def members(gov_net: LocalNetwork) -> Any:
    m = Members(gov_net)
    yield m
    await m.close()


def PEM() -> str:
    return PrivateKey.generate().public_key.pem


async def test_walkthrough_add_member_and_user(gov_net: LocalNetwork, members: Members) -> None:
    dave, carol_user = PrivateKey.generate("ES256"), PrivateKey.generate("ES384")
    p = await members.decide(
        [
            {"name": "set_member", "args": {"name": "dave", "public_key": dave.public_key.pem}},
            {"name": "set_user", "args": {"name": "carol-user", "public_key": carol_user.public_key.pem}},
        ],
        voters=[0, 1],
    )
    assert p["state"] == "Accepted"
    c = Client(gov_net.gateway_url, carol_user)
    try:
        h = await c.put("public:gov-e2e", "hello", "from a user added by vote")
        assert (await c.wait(h))["status"] == "Committed"
    finally:
        await c.close()
    listed = {m["name"] for m in (await members.clients[0]._request("GET", "/v1/gov/members"))[1]["members"]}
    assert "dave" in listed
    # dave (ECDSA P-256) now votes: with 4 members a majority is 3
    members.clients.append(Client(gov_net.gateway_url, dave))
    erin = PrivateKey.generate()
    pid = await members.propose([{"name": "set_user", "args": {"name": "erin", "public_key": erin.public_key.pem}}])
    assert (await members.vote(pid, [0, 1]))["state"] == "Open"
    assert (await members.vote(pid, [3]))["state"] == "Accepted"
    await members.decide([{"name": "remove_member", "args": {"name": "dave"}}], voters=[0, 1, 3])
    await members.clients.pop().close()


async def test_removed_user_and_user_proposals_are_refused(gov_net: LocalNetwork, members: Members) -> None:
    frank = PrivateKey.generate()
    await members.decide([{"name": "set_user", "args": {"name": "frank", "public_key": frank.public_key.pem}}], [0, 1])
    fc = Client(gov_net.gateway_url, frank)
    try:
        assert (await fc.wait(await fc.put("public:gov-e2e", "f", 1)))["status"] == "Committed"
        refused = await fc.propose([{"name": "open_service", "args": {}}])
        st = await fc.wait(refused["tx_hash"])
        assert st["status"] == "Invalid" and st["reason"] == "governance_refused"
        assert "users cannot submit a proposal" in st["message"]
        await members.decide([{"name": "remove_user", "args": {"name": "frank"}}], [0, 1])
        st = await fc.wait(await fc.put("public:gov-e2e", "f", 2))
        assert st["status"] == "Invalid" and st["reason"] == "unknown_sender"
    finally:
        await fc.close()


async def test_forged_replayed_and_late_ballots(gov_net: LocalNetwork, members: Members) -> None:
    c0 = members.clients[0]
    pid = await members.propose([{"name": "set_commit_quorum", "args": {"quorum": 3}}])
    # a ballot whose signature was altered
    good = documents.make_ballot(pid, True, gov_net.member_key(1), int(time.time()), ledger=gov_net.opt.ledger)
    forged = bytearray(good)
    forged[-1] ^= 1
    sub = await c0._post_document(f"/v1/gov/proposals/{pid}/ballots", bytes(forged))
    st = await c0.wait(sub["tx_hash"])
    assert (st["status"], st["reason"]) == ("Invalid", "governance_refused")
    assert "signature" in st["message"], st
    # a ballot by someone who is not a member
    stranger = Client(gov_net.gateway_url, PrivateKey.generate())
    try:
        st = await stranger.wait((await stranger.vote(pid, True))["tx_hash"])
        assert (st["status"] == "Invalid" and "unknown" in st["message"]) or "member" in st["message"], st
    finally:
        await stranger.close()
    # the same member voting again is refused; replaying the identical bytes changes nothing
    cast = await c0._post_document(f"/v1/gov/proposals/{pid}/ballots", good)
    assert (await c0.wait(cast["tx_hash"]))["status"] == "Committed"
    again = await members.clients[1].vote(pid, False)
    assert (await c0.wait(again["tx_hash"]))["status"] == "Invalid"
    replay = await c0._post_document(f"/v1/gov/proposals/{pid}/ballots", good)
    first = await c0.wait(replay["tx_hash"])
    assert first["status"] == "Committed"
    assert (await c0.proposal(pid))["ballots"] == {members.clients[1].key.key_id: "approve"}
    # a ballot created outside the replay window
    stale = documents.make_ballot(pid, True, gov_net.member_key(2), int(time.time()) - 7200, ledger=gov_net.opt.ledger)
    st = await c0.wait((await c0._post_document(f"/v1/gov/proposals/{pid}/ballots", stale))["tx_hash"])
    assert st["status"] == "Invalid"
    assert (await c0.proposal(pid))["state"] == "Open", "nothing refused may count"


async def test_gateway_refuses_malformed_documents(gov_net: LocalNetwork, members: Members) -> None:
    c0 = members.clients[0]
    for body, code in [(b"\xa0", "invalid_document"), (b"not cbor at all", "invalid_document")]:
        with pytest.raises(ClientError) as e:
            await c0._post_document("/v1/gov/proposals", body)
        assert (e.value.status, e.value.code) == (400, code)
    ballot = documents.make_ballot("ab" * 32, True, gov_net.member_key(0), int(time.time()), ledger=gov_net.opt.ledger)
    with pytest.raises(ClientError) as e:
        await c0._post_document("/v1/gov/proposals", ballot)
    assert e.value.code == "wrong_document_type"
    with pytest.raises(ClientError) as e:
        await c0._post_document(f"/v1/gov/proposals/{'cd' * 32}/ballots", ballot)
    assert e.value.code == "proposal_mismatch"
    with pytest.raises(ClientError) as e:
        await c0._post_document("/v1/gov/proposals", b"x" * (cose.MAX_DOCUMENT_BYTES + 1))
    assert e.value.status == 413
    async with aiohttp.ClientSession() as s, s.post(f"{gov_net.gateway_url}/v1/gov/proposals", json={"x": 1}) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "missing_field"
    with pytest.raises(ClientError) as e:
        await c0.proposal("ef" * 32)
    assert e.value.status == 404


async def test_constitution_change_applies_to_later_proposals(gov_net: LocalNetwork, members: Members) -> None:
    unanimity = {**default_constitution(), "auto_trust_nodes": True}
    unanimity["rules"] = {**unanimity["rules"], "set_user": {"proposers": "members", "accept": {"rule": "unanimity"}}}
    before = await members.propose(
        [{"name": "set_user", "args": {"name": "early", "public_key": PrivateKey.generate().public_key.pem}}]
    )
    assert (await members.decide([{"name": "set_constitution", "args": {"constitution": unanimity}}], [0, 1]))[
        "state"
    ] == "Accepted"
    assert (await members.vote(before, [0, 1]))["state"] == "Accepted", "opened before: majority still applies"
    after = await members.propose(
        [{"name": "set_user", "args": {"name": "late", "public_key": PrivateKey.generate().public_key.pem}}]
    )
    assert (await members.vote(after, [0, 1]))["state"] == "Open"
    assert (await members.vote(after, [2]))["state"] == "Accepted"
    weighted = {
        **unanimity,
        "rules": {
            "default": {"proposers": "members", "accept": {"rule": "majority"}},
            "set_user": {"proposers": "members", "accept": {"rule": "k_of_n", "k": 1}},
        },
    }
    await members.decide([{"name": "set_constitution", "args": {"constitution": weighted}}], [0, 1])
    one = await members.propose(
        [{"name": "set_user", "args": {"name": "k1", "public_key": PrivateKey.generate().public_key.pem}}]
    )
    assert (await members.vote(one, [2]))["state"] == "Accepted"
    # an action no other test proposes: the same actions signed by the same Ed25519 key in the same
    # second are the same document, so a later proposal of them would be this rejected one
    reject = await members.propose([{"name": "set_map_policy", "args": {"map": "gov-e2e-rejected"}}])
    assert (await members.vote(reject, [0, 1], approve=False))["state"] == "Rejected"
    constitution = (await members.clients[0]._request("GET", "/v1/gov/constitution"))[1]
    assert constitution["version"] >= 3


async def test_commit_quorum_and_determinism(gov_net: LocalNetwork, members: Members) -> None:
    p = await members.decide([{"name": "set_commit_quorum", "args": {"quorum": 3}}], [0, 1])
    assert p["state"] == "Accepted"
    user = Client(gov_net.gateway_url, PrivateKey.from_file(str(gov_net.dir / gov_net.users[0]["key"])))
    try:
        h = await user.put("public:gov-e2e", "quorum", 3)
        await user.wait(h)
        r = await user.receipt(h)
        assert r["quorum"] == 3 and len(r["signatures"]) == 3
        v = receipt.verify(r, consortium.load_trusted((gov_net.dir / "consortium.json").read_text()))
        assert len(v.members) == 3
    finally:
        await user.close()
    await members.decide([{"name": "set_commit_quorum", "args": {"quorum": 2}}], [0, 1])
    from conclavium.cli.local import _node_status

    names = [n for n in gov_net.procs if n.startswith("executor-")]
    for _ in range(50):
        st = await _node_status(gov_net.nats_url, gov_net.opt.ledger, names)
        if len({s["committed_height"] for s in st}) == 1 and len({s["root"] for s in st}) == 1:
            break
        await asyncio.sleep(0.1)
    assert len({s["root"] for s in st}) == 1, json.dumps(st)


async def _publish_unchecked(net: LocalNetwork, document: bytes) -> str:
    """Put a governance document on the intake stream as a gateway that checks nothing would."""
    import hashlib

    import nats

    from conclavium import streams
    from conclavium.block import Entry, IntakeBatch, Kind, encode

    nc = await nats.connect(net.nats_url)
    try:
        batch = IntakeBatch(entries=[Entry(Kind.GOV, document, b"")])
        await nc.jetstream().publish(streams.intake_subject(net.opt.ledger), encode(batch))
    finally:
        await nc.close()
    return hashlib.sha256(document).hexdigest()


async def test_documents_for_another_ledger_are_refused(gov_net: LocalNetwork, members: Members) -> None:
    """Same member keys, another ledger's documents: the gateway answers 400, and the executors refuse
    them with the reason when a gateway lets them through; nothing counts and the ledger keeps going."""
    c0, key0, key1 = members.clients[0], gov_net.member_key(0), gov_net.member_key(1)
    actions = [{"name": "set_user", "args": {"name": "twin-user", "public_key": PEM()}}]
    foreign = documents.make_proposal(actions, key0, int(time.time()), ledger="twin-ledger")
    with pytest.raises(ClientError) as e:
        await c0._post_document("/v1/gov/proposals", foreign)
    assert (e.value.status, e.value.code) == (400, "wrong_ledger")

    st = await c0.wait(await _publish_unchecked(gov_net, foreign))
    assert (st["status"], st["reason"]) == ("Invalid", "wrong_ledger"), st
    assert "twin-ledger" in st["message"]
    with pytest.raises(ClientError) as e:
        await c0.proposal(documents.document_id(foreign))
    assert e.value.status == 404

    headers = {cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: int(time.time())}
    bare = cose.sign1(json.dumps({"actions": actions}).encode(), key0, headers)
    with pytest.raises(ClientError) as e:
        await c0._post_document("/v1/gov/proposals", bare)
    assert (e.value.status, e.value.code) == (400, "missing_ledger")
    st = await c0.wait(await _publish_unchecked(gov_net, bare))
    assert (st["status"], st["reason"]) == ("Invalid", "missing_ledger"), st

    # a ballot on a genuine proposal of this ledger, signed for the twin, does not count either
    pid = await members.propose(actions)
    twin_ballot = documents.make_ballot(pid, True, key1, int(time.time()), ledger="twin-ledger")
    st = await c0.wait(await _publish_unchecked(gov_net, twin_ballot))
    assert (st["status"], st["reason"]) == ("Invalid", "wrong_ledger"), st
    assert (await c0.proposal(pid))["ballots"] == {}
    state = (await members.vote(pid, [0]))["state"]
    if state == "Open":
        state = (await members.vote(pid, [1]))["state"]
    assert state == "Accepted", "the ledger keeps committing"


async def test_sdk_signs_only_for_the_pinned_ledger(gov_net: LocalNetwork) -> None:
    """With a pinned service certificate the SDK refuses to sign for a ledger the certificate does not
    name, whatever the gateway says it serves."""
    import datetime as dt

    from conclavium.identity import service_certificate

    twin_cert = service_certificate(PrivateKey.generate(), "twin-ledger", dt.datetime.now(dt.UTC))
    async with Client(gov_net.gateway_url, gov_net.member_key(0), service_cert=twin_cert) as c:
        with pytest.raises(ClientError) as e:
            await c.propose([{"name": "set_user", "args": {"name": "never", "public_key": PEM()}}])
        assert (e.value.status, e.value.code) == (502, "untrusted_ledger")
    pinned = (gov_net.dir / "service_cert.pem").read_text()
    async with Client(gov_net.gateway_url, gov_net.member_key(0), service_cert=pinned) as c:
        assert await c.ledger_id() == gov_net.opt.ledger
