"""Signed reads, tried through a hostile proxy in front of a real gateway of a real local network:
it rewrites a value, hands out the answer to another request (another key, an older height),
strips the executors' signature, claims an entry does not exist, re-signs an answer with a node key
of its own (endorsed by a key that is no member, or certified by a service key of its own), or
rewrites a private query's sealed answer. The SDK and the CLI, given the consortium identity,
refuse every one of them with a machine-readable reason, and an identity that retired the answering
nodes refuses their answers; genuine answers pass."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gateway_proxy import serving, user_key

from conclavium import consortium, read_answer
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e, canonical_json
from conclavium.identity import node_certificate, service_certificate
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import free_port
from conclavium.query import reply_context
from conclavium.sdk.client import Client, ClientError

Rewrite = Callable[[web.Request, int, Any], tuple[int, Any]]


class ReadRewritingProxy:
    """Relays everything to the gateway; `rewrite`, when set, changes what it answers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rewrite: Rewrite | None = None
        self.last_body = b""  # of the last request relayed
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = self.last_body = await request.read()
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers={"Content-Type": request.content_type},
            ) as r,
        ):
            status, data = r.status, await r.json(content_type=None)
        if self.rewrite is not None:
            status, data = self.rewrite(request, status, data)
        return web.json_response(data, status=status)


@pytest.fixture
async def proxy(network: LocalNetwork) -> AsyncIterator[ReadRewritingProxy]:
    p = ReadRewritingProxy(network.gateway_url)
    async with serving(p.handle, p.port):
        yield p


def _on_state(rewrite: Callable[[Any], Any]) -> Rewrite:
    """Apply `rewrite` to public state answers only."""

    def apply(request: web.Request, status: int, data: Any) -> tuple[int, Any]:
        if request.path.startswith("/v1/state/"):
            return rewrite(status, data)
        return status, data

    return apply


async def _refused(c: Client, map_name: str, key: str) -> ClientError:
    with pytest.raises(ClientError) as e:
        await c.get(map_name, key)
    return e.value


async def test_genuine_reads_verify_and_name_their_height(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        st = await c.wait(await c.put("public:signed", "a", {"n": 1.5, "s": "é\u2028", "l": [None, True]}))
        assert await c.get("public:signed", "a") == {"n": 1.5, "s": "é\u2028", "l": [None, True]}
        assert c.last_read is not None and c.last_read.height >= st["height"]
        assert c.last_read.node in {n["id"] for n in (await c.service())["nodes"]}
        await c.wait(await c.put("diary", "mine", "private value"))
        assert await c.get("diary", "mine") == "private value"
        with pytest.raises(ClientError) as e:  # a signed not_found is the executor's word: passed on as such
            await c.get("public:signed", "missing")
        assert (e.value.status, e.value.code) == (404, "not_found")
        assert await c.constitution() == (await c.service())["constitution"]
        assert (await c.members())["members"]


async def test_a_rewritten_value_is_refused(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:balances", "alice", 10))

        def richer(status: int, data: Any) -> tuple[int, Any]:
            return status, {**data, "value": 1_000_000} if status == 200 else data

        proxy.rewrite = _on_state(richer)
        e = await _refused(c, "public:balances", "alice")
        assert (e.status, e.code, e.reason) == (502, "unverified_read", "bad_signature"), e


async def test_the_answer_for_another_key_is_refused(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:balances", "poor", 1))
        await c.wait(await c.put("public:balances", "rich", 1_000_000))
        await c.get("public:balances", "rich")
        recorded: dict[str, Any] = {}

        def record(status: int, data: Any) -> tuple[int, Any]:
            recorded.setdefault("answer", data)
            return status, data

        proxy.rewrite = _on_state(record)
        await c.get("public:balances", "rich")
        # replayed verbatim, key and all, and with the key changed to the one asked for
        for answer in (recorded["answer"], {**recorded["answer"], "key": "poor"}):
            proxy.rewrite = _on_state(lambda status, data, a=answer: (200, a))
            e = await _refused(c, "public:balances", "poor")
            assert (e.code, e.reason) == ("unverified_read", "wrong_request"), e


async def test_an_older_answer_is_refused_once_a_newer_height_was_seen(
    network: LocalNetwork, proxy: ReadRewritingProxy
) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:price", "x", 1))
        recorded: dict[str, Any] = {}

        def record(status: int, data: Any) -> tuple[int, Any]:
            recorded.setdefault("answer", data)
            return status, data

        proxy.rewrite = _on_state(record)
        assert await c.get("public:price", "x") == 1
        proxy.rewrite = None
        st = await c.wait(await c.put("public:price", "x", 2))
        assert st["height"] > recorded["answer"]["signed_read"]["height"]
        proxy.rewrite = _on_state(lambda status, data: (200, recorded["answer"]))
        e = await _refused(c, "public:price", "x")
        assert (e.code, e.reason) == ("unverified_read", "stale_read"), e
        proxy.rewrite = None
        assert await c.get("public:price", "x") == 2


async def test_unsigned_answers_and_unsigned_not_found_are_refused(
    network: LocalNetwork, proxy: ReadRewritingProxy
) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:doors", "front", "locked"))
        proxy.rewrite = _on_state(lambda status, data: (status, {k: v for k, v in data.items() if k != "signed_read"}))
        e = await _refused(c, "public:doors", "front")
        assert (e.code, e.reason) == ("unverified_read", "unsigned_read"), e
        proxy.rewrite = _on_state(
            lambda status, data: (404, {"error": {"code": "not_found", "message": "no such key"}})
        )
        e = await _refused(c, "public:doors", "front")
        assert (e.code, e.reason) == ("unverified_read", "unsigned_read"), e
        # refusing service is always possible and is passed on as what it is
        proxy.rewrite = _on_state(lambda status, data: (503, {"error": {"code": "no_executor", "message": "none"}}))
        e = await _refused(c, "public:doors", "front")
        assert (e.status, e.code) == (503, "no_executor")


async def test_an_answer_signed_by_a_node_no_member_endorsed_is_refused(
    network: LocalNetwork, proxy: ReadRewritingProxy
) -> None:
    rogue_member, rogue_node = PrivateKey.generate("Ed25519"), PrivateKey.generate("Ed25519")
    endorsement = b64e(consortium.make_node_endorsement(rogue_member, "local", rogue_node.public_key.pem, 0))

    def forge(status: int, data: Any) -> tuple[int, Any]:
        answer = {k: v for k, v in data.items() if k != "signed_read"} | {"value": "unlocked"}
        request = read_answer.state_request("public:doors", "back")
        return 200, read_answer.sign(rogue_node, endorsement, "local", data["signed_read"]["height"], request, answer)

    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:doors", "back", "locked"))
        proxy.rewrite = _on_state(forge)
        e = await _refused(c, "public:doors", "back")
        assert (e.code, e.reason) == ("unverified_read", "untrusted_node"), e
    # given an identity in which the rogue key is a member, the same answer verifies: the identity decides
    rogue = consortium.make_identity("local", [{"name": "rogue", "public_key": rogue_member.public_key.pem}])
    async with Client(proxy.url, user_key(network), consortium=json.dumps(rogue)) as c:
        assert await c.get("public:doors", "back") == "unlocked"


async def test_an_answer_endorsed_by_the_service_key_is_refused(
    network: LocalNetwork, proxy: ReadRewritingProxy
) -> None:
    """Every node holds the service key: a node certificate it issues (the old format's endorsement,
    one node's secrets can mint it) is not an endorsement under the identity."""
    rogue_service, rogue_node = PrivateKey.generate("Ed25519"), PrivateKey.generate("Ed25519")
    now = dt.datetime.now(dt.UTC)
    cert = node_certificate(rogue_service, service_certificate(rogue_service, "local", now), rogue_node.public_key, now)

    def forge(status: int, data: Any) -> tuple[int, Any]:
        answer = {k: v for k, v in data.items() if k != "signed_read"} | {"value": "unlocked"}
        request = read_answer.state_request("public:doors", "side")
        signed = read_answer.sign(rogue_node, "", "local", data["signed_read"]["height"], request, answer)
        old = {k: v for k, v in signed["signed_read"].items() if k not in ("signing_key", "endorsement")}
        return 200, {**signed, "signed_read": {**old, "v": 1, "cert": cert}}

    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:doors", "side", "locked"))
        proxy.rewrite = _on_state(forge)
        e = await _refused(c, "public:doors", "side")
        assert (e.code, e.reason) == ("unverified_read", "malformed"), e


async def test_answers_of_retired_nodes_are_refused(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    """An identity version that retired every node (from height 0) refuses their later answers."""
    current = json.loads((network.dir / "consortium.json").read_text())
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("public:doors", "cellar", "locked"))
        nodes = [n["id"] for n in (await c.service())["nodes"]]
    retired = consortium.next_identity(current, retired_nodes=[{"node": n, "after_height": 0} for n in nodes])
    async with Client(proxy.url, user_key(network), consortium=json.dumps(retired)) as c:
        e = await _refused(c, "public:doors", "cellar")
        assert (e.code, e.reason) == ("unverified_read", "untrusted_node"), e
        assert "retired after height 0" in str(e)


async def test_a_forged_private_answer_is_refused(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    """Anyone can seal to the query's reply key (it is in the query body): the signature is what
    says an executor chose the sealed answer."""

    def forge(request: web.Request, status: int, data: Any) -> tuple[int, Any]:
        if request.path != "/v1/queries":
            return status, data
        raw = base64.b64decode(json.loads(proxy.last_body)["body"])
        forged = canonical_json({"map": "diary", "key": "secret", "value": "forged"})
        box = sealing.seal(forged, bytes.fromhex(json.loads(raw)["reply_key"]), reply_context(raw))
        return 200, {**data, "sealed": b64e(box)}

    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        await c.wait(await c.put("diary", "secret", "true value"))
        assert await c.get("diary", "secret") == "true value"
        proxy.rewrite = forge
        e = await _refused(c, "diary", "secret")
        assert (e.code, e.reason) == ("unverified_read", "bad_signature"), e
    async with Client(proxy.url, user_key(network)) as c:  # what an unchecked client would have believed
        with pytest.raises(ClientError) as unpinned:
            await c.get("diary", "secret")
        assert unpinned.value.code == "no_consortium"


async def test_a_rewritten_governance_read_is_refused(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    def rewrite(request: web.Request, status: int, data: Any) -> tuple[int, Any]:
        if request.path == "/v1/gov/members" and status == 200:
            return status, {**data, "members": data["members"][:1]}
        return status, data

    proxy.rewrite = rewrite
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        with pytest.raises(ClientError) as e:
            await c.members()
        assert (e.value.code, e.value.reason) == ("unverified_read", "bad_signature")
    async with Client(proxy.url, user_key(network)) as c:  # unpinned: the gateway's word, unchecked
        assert len((await c.members())["members"]) == 1


async def test_cli_refuses_an_altered_read_in_one_line(network: LocalNetwork, proxy: ReadRewritingProxy) -> None:
    key_file, cert_file = network.dir / network.users[0]["key"], network.dir / "service_cert.pem"
    pins = ["--service-cert", str(cert_file), "--consortium", str(network.dir / "consortium.json")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "conclavium.cli.main", "--gateway", proxy.url, "--key", str(key_file)]
        return subprocess.run([*argv, *pins, *args], capture_output=True, text=True, timeout=60)

    ok = await asyncio.to_thread(cli, "tx", "put", "public:cli-reads", "k", '"genuine"', "--wait")
    assert ok.returncode == 0, ok.stderr
    got = await asyncio.to_thread(cli, "tx", "get", "public:cli-reads", "k")
    assert (got.returncode, got.stdout.strip()) == (0, '"genuine"'), got.stderr
    proxy.rewrite = _on_state(lambda status, data: (status, {**data, "value": "forged"}))
    bad = await asyncio.to_thread(cli, "tx", "get", "public:cli-reads", "k")
    assert bad.returncode == 1 and bad.stdout == "", (bad.stdout, bad.stderr)
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert json.loads(lines[0])["error"] | {"message": ""} == {
        "status": 502,
        "code": "unverified_read",
        "reason": "bad_signature",
        "message": "",
    }


async def test_concurrent_reads_each_verify(network: LocalNetwork) -> None:
    """Under load an executor signs a batch of answers at once: each answer still verifies alone."""
    async with Client(network.gateway_url, user_key(network), **network.trust()) as c:
        hashes = [await c.put("public:many", f"k{i}", i) for i in range(20)]
        await c.wait(hashes[-1])
        readers = [Client(network.gateway_url, None, **network.trust()) for _ in range(10)]
        for r in readers:  # as if each had seen the commit: an executor still behind it must not answer
            r.seen_height = c.seen_height
        try:
            got = await asyncio.gather(*(readers[i % 10].get("public:many", f"k{i % 20}") for i in range(160)))
        finally:
            for r in readers:
                await r.close()
    assert got == [i % 20 for i in range(160)]


def test_a_batch_signature_covers_each_answer_and_nothing_else() -> None:
    member, node_key = PrivateKey.generate("Ed25519"), PrivateKey.generate("Ed25519")
    ident = consortium.load(consortium.make_identity("local", [{"name": "m", "public_key": member.public_key.pem}]))
    endorsement = b64e(consortium.make_node_endorsement(member, "local", node_key.public_key.pem, 0))
    asked = [read_answer.state_request("public:m", f"k{i}") for i in range(7)]
    answers = [{"map": "public:m", "key": f"k{i}", "value": i} for i in range(7)]
    items = [read_answer.unsigned(9, r, a) for r, a in zip(asked, answers, strict=True)]
    signed = [json.loads(b) for b in read_answer.sign_batch(node_key, endorsement, "local", items)]
    assert len({s["signed_read"]["signature"] for s in signed}) == 1
    for request, answer, got in zip(asked, answers, signed, strict=True):
        checked = read_answer.verify(got, request, ident, min_height=9)
        assert (checked.answer, checked.height, checked.node) == (answer, 9, node_key.key_id)
    moved = {**signed[1], "signed_read": {**signed[1]["signed_read"], "path": signed[2]["signed_read"]["path"]}}
    swapped = {**signed[2], "signed_read": {**signed[2]["signed_read"], "request": signed[1]["signed_read"]["request"]}}
    for forged, request, code in ((moved, asked[1], "bad_signature"), (swapped, asked[1], "bad_signature")):
        with pytest.raises(read_answer.ReadAnswerError) as e:
            read_answer.verify(forged, request, ident)
        assert e.value.code == code
    with pytest.raises(read_answer.ReadAnswerError) as e:
        read_answer.verify(signed[0], asked[0], ident, min_height=10)
    assert e.value.code == "stale_read"
