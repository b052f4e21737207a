"""Clients trust only what they verify, tried through a hostile proxy in front of a real gateway:
it substitutes the transaction key in the executors' vouches, or hands out a vouch for a key of its
own signed with one real node's complete key material (its node key and member endorsement, the
service key): the SDK and the CLI refuse it and seal nothing, since a key counts only when nodes of
k distinct members vouch for it. It replays the executors' genuine vouches recorded before a
rotation, for the retired key: the SDK asks with a fresh nonce and refuses them. It answers
Committed for a transaction that never committed or hands out another transaction's receipt
(`wait()` refuses to report the commit). Without a pinned consortium identity nothing is sealed at
all."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gateway_proxy import node_material, serving, user_key

from conclavium import consortium, read_answer, tx_key_vouch
from conclavium.crypto import sealing
from conclavium.encoding import b64d
from conclavium.identity import sign_tx_key
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import free_port
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import seal_context


class HostileProxy:
    """Relays everything to the gateway, except what `mode` makes it lie about."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.mode = "relay"
        self.attacker_key = sealing.generate_key()
        self.forger: Callable[[str | None], Any] | None = None  # a node-level forger's vouch for a nonce
        self.recorded: bytes | None = None  # a tx-key answer kept in "record" mode, served in "replay" mode
        self.recorded_nonce: str | None = None  # the nonce the client asked that answer with
        self.sealed_seen: list[bytes] = []
        self.dropped: set[str] = set()
        self.stolen_receipt: Any = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path_qs
        if request.method == "POST" and request.path == "/v1/transactions":
            tx_body = base64.b64decode(json.loads(body)["body"])
            if b'"sealed"' in tx_body:
                self.sealed_seen.append(tx_body)
            if self.mode == "fake_commit":
                h = hashlib.sha256(tx_body).hexdigest()
                self.dropped.add(h)
                return web.json_response({"tx_hash": h}, status=202)
        parts = request.path.split("/")
        if self.mode in ("fake_commit", "stolen_receipt") and len(parts) == 4 and parts[2] == "transactions":
            if parts[3] in self.dropped or self.mode == "stolen_receipt":
                return web.json_response({"tx_hash": parts[3], "status": "Committed", "height": 5})
        if self.mode == "stolen_receipt" and request.path.endswith("/receipt"):
            return web.json_response(self.stolen_receipt)
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                request.method, self.upstream + path, data=body, headers={"Content-Type": request.content_type}
            ) as r,
        ):
            data = await r.read()
            status = r.status
        if request.path == "/v1/service/tx-key" and self.mode == "replay" and self.recorded is not None:
            return web.Response(body=self.recorded, content_type="application/json")
        if request.path == "/v1/service/tx-key" and status == 200 and self.mode == "record":
            self.recorded, self.recorded_nonce = data, request.query.get("nonce")
        elif request.path == "/v1/service/tx-key" and status == 200 and self.mode != "relay":
            vouches = json.loads(data)["vouches"]
            forged = [self.forger(request.query.get("nonce"))] if self.forger else []
            public = sealing.public_bytes(self.attacker_key).hex()
            if self.mode == "swap_key":  # every executor's vouch, the key replaced
                vouches = [{**v, "tx_key": {**v["tx_key"], "public": public}} for v in vouches]
            elif self.mode == "forged":  # only the forger's word, as often as it likes
                vouches = forged * 3
            elif self.mode == "forged_beside":
                vouches = [*forged, *vouches]
            data = json.dumps({"vouches": vouches}).encode()
        return web.Response(body=data, status=status, content_type="application/json")


@pytest.fixture
async def proxy(network: LocalNetwork) -> AsyncIterator[HostileProxy]:
    p = HostileProxy(network.gateway_url)
    async with serving(p.handle, p.port):
        yield p


def _forge(network: LocalNetwork, proxy: HostileProxy) -> None:
    """executor-0's node key, its member's genuine endorsement and the service key vouch for the
    attacker's transaction key: a signed answer that verifies, from one member's node, made afresh
    for whatever nonce the client sent."""
    keys, secrets = node_material(network, "executor-0")
    node0 = next(n for n in network.service()["nodes"] if n["name"] == "executor-0")
    genuine = network.service()["tx_key"]
    public = sealing.public_bytes(proxy.attacker_key)
    row = {**genuine, **sign_tx_key(secrets.service_key, network.opt.ledger, genuine["id"], public)}
    answer = {"tx_key": row}
    height = network.service()["height"]

    def forge(nonce: str | None) -> Any:
        asked = tx_key_vouch.request(nonce)
        return read_answer.sign(keys.signing, node0["member_endorsement"], network.opt.ledger, height, asked, answer)

    proxy.forger = forge


def forge_for(proxy: HostileProxy, nonce: str | None) -> Any:
    assert proxy.forger is not None
    return proxy.forger(nonce)


@pytest.mark.parametrize(
    ("mode", "told"), [("swap_key", "at most 0 distinct member(s)"), ("forged", "at most 1 distinct member(s)")]
)
async def test_sdk_refuses_to_seal_to_a_substituted_tx_key(
    network: LocalNetwork, proxy: HostileProxy, mode: str, told: str
) -> None:
    _forge(network, proxy)
    trusted = consortium.load_trusted(network.trust()["consortium"])
    # the forger's vouch is a genuine signed answer of an endorsed node: one member's word
    assert read_answer.verify(forge_for(proxy, None), tx_key_vouch.request(), trusted).member in trusted.members
    proxy.mode = mode
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        with pytest.raises(ClientError) as e:
            await c.put("clinic", "patient-1", {"secret": "O-"})
        assert (e.value.status, e.value.code, e.value.reason) == (502, "untrusted_tx_key", "insufficient_vouches")
        assert told in e.value.message and "needs 2" in e.value.message, e.value
        with pytest.raises(ClientError) as e:
            await c.get("clinic", "patient-1")
        assert e.value.code == "untrusted_tx_key"
    assert proxy.sealed_seen == []


async def test_a_forged_vouch_beside_the_genuine_ones_changes_nothing(
    network: LocalNetwork, proxy: HostileProxy
) -> None:
    """The forger's vouch is one member's word; the executors' vouches name the genuine key, which
    the SDK seals to (the forger's key opens none of what it sealed)."""
    _forge(network, proxy)
    proxy.mode = "forged_beside"
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        genuine = network.service()["tx_key"]
        assert await c.tx_key() == (genuine["id"], bytes.fromhex(genuine["public"]))
        st = await c.wait(await c.put("clinic", "patient-5", {"secret": "0+"}))
        assert st["status"] == "Committed" and st["verified"] is True
        assert await c.get("clinic", "patient-5") == {"secret": "0+"}
    assert proxy.sealed_seen
    for body in proxy.sealed_seen:
        tx = json.loads(body)
        header = {k: v for k, v in tx.items() if k != "sealed"}
        with pytest.raises(sealing.SealError):
            sealing.open_sealed(b64d(tx["sealed"]["ct"]), proxy.attacker_key, seal_context(header))


async def test_sdk_without_a_pinned_identity_seals_nothing(network: LocalNetwork, proxy: HostileProxy) -> None:
    async with Client(proxy.url, user_key(network), service_cert=network.trust()["service_cert"]) as c:
        with pytest.raises(ClientError) as e:
            await c.put("clinic", "patient-2", {"secret": "B+"})
        assert (e.value.status, e.value.code) == (400, "no_consortium")
        assert "--consortium" in e.value.message
        h = await c.put("public:notice", "unpinned", 1)
        st = await c.wait(h)
        assert st["status"] == "Committed" and st["verified"] is False
    assert proxy.sealed_seen == []


async def test_wait_refuses_a_commit_that_never_happened(network: LocalNetwork, proxy: HostileProxy) -> None:
    proxy.mode = "fake_commit"
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        h = await c.put("clinic", "patient-3", {"secret": "A-"})
        assert h in proxy.dropped
        assert (await c.status(h))["status"] == "Committed"  # the proxy's lie
        with pytest.raises(ClientError) as e:
            await c.wait(h, timeout=3)
        assert (e.value.status, e.value.code) == (502, "unverified_commit"), e.value


async def test_wait_refuses_another_transactions_receipt(network: LocalNetwork, proxy: HostileProxy) -> None:
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        real = await c.put("clinic", "patient-4", {"secret": "AB"})
        st = await c.wait(real)
        assert st["status"] == "Committed" and st["verified"] is True and st["receipt"]["tx_hash"] == real
        proxy.stolen_receipt = st["receipt"]
        proxy.mode = "stolen_receipt"
        with pytest.raises(ClientError) as e:
            await c.wait(os.urandom(32).hex(), timeout=3)
        assert e.value.code == "unverified_commit" and "another transaction" in e.value.message
        forged = {**st["receipt"], "root": "00" * 32}
        proxy.stolen_receipt = forged
        with pytest.raises(ClientError) as e:
            await c.wait(real, timeout=3)
        assert e.value.code == "unverified_commit"


async def test_cli_pins_a_service_certificate_with_gateway(
    network: LocalNetwork, proxy: HostileProxy, tmp_path: Path
) -> None:
    key_file = network.dir / network.users[0]["key"]
    cert_file = network.dir / "service_cert.pem"

    identity_file = network.dir / "consortium.json"
    pins = ["--service-cert", str(cert_file), "--consortium", str(identity_file)]

    def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "conclavium.cli.main", "--gateway", url, "--key", str(key_file)]
        return subprocess.run([*argv, *pins, *args], capture_output=True, text=True, timeout=60)

    ok = await asyncio.to_thread(cli, network.gateway_url, "tx", "put", "clinic", "cli-key", '"cli-value"', "--wait")
    assert ok.returncode == 0, ok.stderr
    proxy.mode = "swap_key"
    bad = await asyncio.to_thread(cli, proxy.url, "tx", "put", "clinic", "cli-key-2", '"v"')
    assert bad.returncode == 1 and "untrusted_tx_key" in bad.stderr, (bad.stdout, bad.stderr)
    # With the service certificate alone nothing is sealed: one node's word is all it can check.
    pins = ["--service-cert", str(cert_file)]
    bad = await asyncio.to_thread(cli, proxy.url, "tx", "put", "clinic", "cli-key-2", '"v"')
    assert bad.returncode == 1 and "no_consortium" in bad.stderr, (bad.stdout, bad.stderr)
    assert proxy.sealed_seen == []
    not_pem = tmp_path / "x.pem"
    not_pem.write_text("nope")
    pins = ["--service-cert", str(not_pem)]
    r = await asyncio.to_thread(cli, proxy.url, "tx", "put", "clinic", "k", "1")
    assert r.returncode == 2 and "not a PEM certificate" in r.stderr, r.stderr


async def _rotate(network: LocalNetwork) -> str:
    """The members rotate the ledger secret; returns the new transaction key's id once executors
    name it."""
    old = network.service()["tx_key"]["id"]
    members = [Client(network.gateway_url, network.member_key(i)) for i in range(2)]
    try:
        p = await members[0].propose([{"name": "rotate_ledger_secret", "args": {}}])
        await members[0].wait(p["tx_hash"])
        for m in members:
            await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"])
    finally:
        for m in members:
            await m.close()
    deadline = asyncio.get_running_loop().time() + 120
    while network.service()["tx_key"]["id"] == old:
        assert asyncio.get_running_loop().time() < deadline, "no new transaction key after the rotation was accepted"
        await asyncio.sleep(0.3)
    return str(network.service()["tx_key"]["id"])


async def test_vouches_recorded_before_a_rotation_are_not_replayed(network: LocalNetwork, proxy: HostileProxy) -> None:
    """The gateway keeps the executors' genuine vouches from before a rotation and serves them
    after it, so that clients seal to the retired key (which a removed node may still hold). Signed
    answers do not expire: without freshness they verify. The SDK asks with a fresh nonce, so the
    recorded answers are answers to another request: it refuses them and seals nothing."""
    trusted = consortium.load_trusted(network.trust()["consortium"])
    async with aiohttp.ClientSession() as s, s.get(network.gateway_url + "/v1/service/tx-key") as r:
        plain = await r.read()  # the vouches as a client without a nonce got them
    proxy.mode = "record"
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        old_id, old_public = await c.tx_key()
    assert proxy.recorded is not None
    new_id = await _rotate(network)
    assert new_id != old_id
    # the attack's premise: vouches recorded earlier still verify, for the retired key
    assert tx_key_vouch.verify(json.loads(plain), trusted).id == old_id
    assert proxy.recorded_nonce is not None
    assert tx_key_vouch.verify(json.loads(proxy.recorded), trusted, nonce=proxy.recorded_nonce).id == old_id
    for recorded in (proxy.recorded, plain):
        proxy.recorded, proxy.mode = recorded, "replay"
        async with Client(proxy.url, user_key(network), **network.trust()) as c:
            with pytest.raises(ClientError) as e:
                await c.put("clinic", "patient-replayed", {"secret": "A+"})
            assert (e.value.code, e.value.reason) == ("untrusted_tx_key", "insufficient_vouches"), e.value
            assert "wrong_request" in e.value.message, e.value
    assert proxy.sealed_seen == []
    # the same client through an honest relay seals to the new key
    proxy.mode = "relay"
    async with Client(proxy.url, user_key(network), **network.trust()) as c:
        assert await c.tx_key() == (new_id, bytes.fromhex(network.service()["tx_key"]["public"]))
        st = await c.wait(await c.put("clinic", "patient-replayed", {"secret": "A+"}))
        assert st["status"] == "Committed" and st["verified"] is True
    assert proxy.sealed_seen and old_public != bytes.fromhex(network.service()["tx_key"]["public"])
