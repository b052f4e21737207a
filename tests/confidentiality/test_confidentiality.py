"""Nothing outside the attested executors reads private data: capture the intake and ledger
streams, status events, queries and replies on NATS, every Redis key and value, the gateway's log
and an executor's data directory during a run, and look for a known private value and key name."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Iterator

import nats
import pytest
import redis.asyncio as aioredis

from conclavium import query, streams
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import make_body, sign


@pytest.fixture(scope="module")
def conf_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    from conclavium.local.network import start_network

    net = start_network(tmp_path_factory.mktemp("conf"), redis=True, snapshot_every=50)
    yield net
    net.stop()


def _users(net: LocalNetwork) -> list[PrivateKey]:
    return [PrivateKey.from_file(str(net.dir / u["key"])) for u in net.users]


def _client(net: LocalNetwork, key: PrivateKey | None) -> Client:
    return Client(net.gateway_url, key, **net.trust())


async def test_untrusted_path_never_sees_private_data(conf_net: LocalNetwork) -> None:
    tag = os.urandom(4).hex()
    secret_value, secret_key, secret_map = f"SECRETVALUE{tag}", f"secretkey{tag}", f"clinic{tag}"
    public_value = f"PUBLICVALUE{tag}"
    seen: list[bytes] = []
    nc = await nats.connect(conf_net.nats_url)

    async def capture(m: nats.aio.msg.Msg) -> None:
        seen.append(m.subject.encode() + b" " + m.data)

    for subject in (">", "_INBOX.>"):
        await nc.subscribe(subject, cb=capture)
    alice, bob = (_client(conf_net, k) for k in _users(conf_net))
    try:
        hashes = [await alice.put(secret_map, secret_key, {"diagnosis": secret_value}) for _ in range(1)]
        hashes.append(await alice.put("public:notice", f"n{tag}", public_value))
        for i in range(120):
            hashes.append(await alice.put(secret_map, f"{secret_key}-{i}", f"{secret_value}-{i}"))
        for h in hashes:
            assert (await alice.wait(h))["status"] == "Committed"
        assert await alice.get(secret_map, secret_key) == {"diagnosis": secret_value}
        with pytest.raises(ClientError) as e:
            await bob.get(secret_map, secret_key)
        assert e.value.status == 404 and secret_key not in e.value.message
        await asyncio.sleep(1.0)
        js = nc.jetstream()
        info = await js.stream_info(streams.ledger_stream(conf_net.opt.ledger))
        for seq in range(1, info.state.last_seq + 1):
            seen.append((await js.get_msg(streams.ledger_stream(conf_net.opt.ledger), seq)).data)
    finally:
        await nc.close()
        await alice.close()
        await bob.close()
    r = aioredis.from_url(conf_net.redis_url)
    try:
        async for k in r.scan_iter("*"):
            seen.append(k + b" " + (await r.get(k) or b""))
    finally:
        await r.aclose()
    seen.append((conf_net.dir / "logs" / "gateway.log").read_bytes())
    for f in (conf_net.dir / "nodes" / "executor-1").rglob("*"):
        if f.is_file():
            seen.append(f.read_bytes())
    everything = b"\n".join(seen)
    assert public_value.encode() in everything, "the capture works: public data is visible"
    for needle in (secret_value, secret_key, secret_map):
        assert needle.encode() not in everything, f"{needle} leaked to the untrusted path"
        assert base64.b64encode(needle.encode())[:-4] not in everything


async def test_tampered_wrong_key_and_moved_ciphertexts_are_refused(conf_net: LocalNetwork) -> None:
    user = _users(conf_net)[0]
    c = _client(conf_net, user)
    try:
        key_id, public = await c.tx_key()
        ops = [{"op": "put", "map": "vault", "key": "k", "value": "TOPSECRET"}]

        def body(ts: int, tx_key: tuple[str, bytes]) -> bytes:
            return make_body("local", user.key_id, ops, ts, tx_key=tx_key)

        now = int(time.time() * 1000)
        good = json.loads(body(now, (key_id, public)))
        tampered = dict(good)
        ct = bytearray(base64.b64decode(good["sealed"]["ct"]))
        ct[-3] ^= 1
        tampered["sealed"] = {"key": key_id, "ct": base64.b64encode(bytes(ct)).decode()}
        wrong_key = json.loads(body(now, (key_id, sealing.public_bytes(sealing.generate_key()))))
        unknown_id = json.loads(body(now, ("ffff" * 4, public)))
        moved = json.loads(body(now + 1, (key_id, public)))
        moved["sealed"] = good["sealed"]  # a sealed payload replayed inside another transaction
        expected = {
            "tampered": "undecryptable",
            "wrong key": "undecryptable",
            "unknown key": "unknown_tx_key",
            "moved": "undecryptable",
        }
        for name, doc in (
            ("tampered", tampered),
            ("wrong key", wrong_key),
            ("unknown key", unknown_id),
            ("moved", moved),
        ):
            raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
            st = await c.wait(await c.submit(sign(user, raw)))
            assert (st["status"], st["reason"]) == ("Invalid", expected[name]), (name, st)
            assert "TOPSECRET" not in json.dumps(st) and "vault" not in json.dumps(st)
        clear = sign(user, make_body("local", user.key_id, ops, now))
        st = await c.wait(await c.submit(clear))
        assert (st["status"], st["reason"]) == ("Invalid", "must_seal")
        with pytest.raises(ClientError):
            await c.get("vault", "k")
    finally:
        await c.close()


async def test_query_replies_are_sealed_to_the_caller(conf_net: LocalNetwork) -> None:
    user = _users(conf_net)[0]
    c = _client(conf_net, user)
    try:
        await c.wait(await c.put("diary", "today", "PRIVATE-ENTRY"))
        q, reply_key, body = query.make(user, "local", "diary", "today", int(time.time() * 1000), await c.tx_key())
        _, answer = await c._request("POST", "/v1/queries", q)
        assert set(answer) == {"sealed", "signed_read"} and b"PRIVATE-ENTRY" not in json.dumps(answer).encode()
        assert query.open_reply(answer, reply_key, body)["value"] == "PRIVATE-ENTRY"
        with pytest.raises(ValueError):
            query.open_reply(answer, sealing.generate_key(), body)
    finally:
        await c.close()


async def test_map_policies_govern_reads_and_writes(conf_net: LocalNetwork) -> None:
    alice_u, bob_u = _users(conf_net)
    alice, bob = _client(conf_net, alice_u), _client(conf_net, bob_u)
    members = [Client(conf_net.gateway_url, conf_net.member_key(i)) for i in range(2)]
    try:
        await alice.wait(await alice.put("shared", "plan", "v1"))
        with pytest.raises(ClientError):
            await bob.get("shared", "plan")
        policy = {"map": "shared", "readers": [bob_u.key_id], "writers": [alice_u.key_id]}
        p = await members[0].propose([{"name": "set_map_policy", "args": policy}])
        await members[0].wait(p["tx_hash"])
        for m in members:
            await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
        assert await bob.get("shared", "plan") == "v1"
        st = await bob.wait(await bob.put("shared", "plan", "bob was here"))
        assert (st["status"], st["reason"]) == ("Invalid", "write_forbidden")
        assert await alice.get("shared", "plan") == "v1"
    finally:
        for cl in (alice, bob, *members):
            await cl.close()


async def test_private_entries_are_writable_only_by_their_writer(conf_net: LocalNetwork) -> None:
    """Only the writer reads a private entry, so without a map policy only the writer may replace
    or delete it; a policy naming writers lets them write each other's entries."""
    alice_u, bob_u = _users(conf_net)
    alice, bob = _client(conf_net, alice_u), _client(conf_net, bob_u)
    members = [Client(conf_net.gateway_url, conf_net.member_key(i)) for i in range(2)]
    records = f"records{os.urandom(4).hex()}"
    try:
        assert (await alice.wait(await alice.put(records, "chart", "alice's")))["status"] == "Committed"
        for h in (await bob.put(records, "chart", "bob's"), await bob.delete(records, "chart")):
            st = await bob.wait(h)
            assert (st["status"], st["reason"]) == ("Invalid", "write_forbidden"), st
        assert await alice.get(records, "chart") == "alice's"
        assert (await bob.wait(await bob.put(records, "bobs-own", 1)))["status"] == "Committed"
        assert (await alice.wait(await alice.put(records, "chart", "v2")))["status"] == "Committed"
        policy = {"map": records, "readers": [bob_u.key_id], "writers": [alice_u.key_id, bob_u.key_id]}
        p = await members[0].propose([{"name": "set_map_policy", "args": policy}])
        await members[0].wait(p["tx_hash"])
        for m in members:
            await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
        assert (await bob.wait(await bob.put(records, "chart", "bob's")))["status"] == "Committed"
        assert await bob.get(records, "chart") == "bob's"
    finally:
        for cl in (alice, bob, *members):
            await cl.close()
