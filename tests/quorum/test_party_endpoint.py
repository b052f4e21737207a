"""A member's Quorum party endpoint (Tessera ThirdParty subset) served by that member's executor
over TLS ending in the executor, its certificate issued by the service key (docs/quorum.md)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import redis.asyncio as aioredis

from conclavium import quorum, streams
from conclavium.crypto.keys import PrivateKey
from conclavium.identity import service_certificate
from conclavium.local.network import LocalNetwork, start_network
from conclavium.local.processes import free_port

ROOT = Path(__file__).resolve().parents[2]
QUORUM_JS = ROOT / ".tools" / "quorum-js" / "node_modules"
KEY_A = base64.b64encode(b"A" * 32).decode()  # member 0's party, owned by user 0
KEY_B = base64.b64encode(b"B" * 32).decode()  # member 1's party, owned by member 1 itself


@pytest.fixture(scope="module")
def quorum_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalNetwork, list[str]]]:
    ports = [free_port(), free_port()]
    net = start_network(
        tmp_path_factory.mktemp("quorumnet"),
        redis=True,
        executor_args={i: ["--quorum-port", str(p)] for i, p in enumerate(ports)},
    )
    try:
        yield net, [f"https://127.0.0.1:{p}" for p in ports]
    finally:
        net.stop()


def key_id(net: LocalNetwork, people: list[dict[str, str]], i: int) -> str:
    return PrivateKey.from_file(str(net.dir / people[i]["key"])).key_id


def pinned(net: LocalNetwork) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(net.dir / "service_cert.pem"))


def call(
    url: str, ctx: ssl.SSLContext, body: Any = None, raw: bytes | None = None, token: str | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            text = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(), e.code
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def wait_for(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (OSError, ssl.SSLError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


@pytest.fixture(scope="module")
def parties(quorum_net: tuple[LocalNetwork, list[str]]) -> tuple[LocalNetwork, list[str]]:
    net, urls = quorum_net
    ctx = pinned(net)
    wait_for("the party endpoints", lambda: all(call(f"{u}/upcheck", ctx) == (200, "I'm up!") for u in urls))
    m0, m1, u0 = key_id(net, net.members, 0), key_id(net, net.members, 1), key_id(net, net.users, 0)
    net.vote(
        [
            {"name": "set_quorum_party", "args": {"public_key": KEY_A, "owner": u0, "member": m0}},
            {"name": "set_quorum_party", "args": {"public_key": KEY_B, "owner": m1, "member": m1}},
        ]
    )
    wait_for(
        "both party keys at both executors",
        lambda: all(
            call(f"{u}/partyinfo/keys", ctx)[1] == {"keys": [{"key": k} for k in sorted([KEY_A, KEY_B])]} for u in urls
        ),
    )
    return net, urls


def test_tls_ends_in_the_executor_with_a_service_issued_certificate(parties: tuple[LocalNetwork, list[str]]) -> None:
    net, urls = parties
    with pytest.raises(urllib.error.URLError) as refused:  # the system CAs do not know it
        urllib.request.urlopen(f"{urls[0]}/upcheck", timeout=10, context=ssl.create_default_context())
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    other = PrivateKey.generate()  # a certificate authority of the same shape but not the service's
    wrong = ssl.create_default_context(cadata=service_certificate(other, "other", dt.datetime(2025, 1, 1)))
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{urls[0]}/upcheck", timeout=10, context=wrong)
    assert call(f"{urls[0]}/upcheck", pinned(net)) == (200, "I'm up!")


def test_each_member_endpoint_acts_for_its_own_party_keys(parties: tuple[LocalNetwork, list[str]]) -> None:
    net, urls = parties
    ctx = pinned(net)
    assert call(f"{urls[0]}/keys", ctx) == (200, {"keys": [{"key": KEY_A}]})
    assert call(f"{urls[1]}/keys", ctx) == (200, {"keys": [{"key": KEY_B}]})
    payload = base64.b64encode(b"\x60\x80" * 40).decode()
    status, body = call(f"{urls[0]}/storeraw", ctx, {"payload": payload, "from": KEY_A})
    assert status == 200 and len(base64.b64decode(body["key"])) == 64
    again = call(f"{urls[0]}/storeraw", ctx, {"payload": payload})  # `from` defaults to the member's key
    assert again == (200, body)
    assert call(f"{urls[0]}/storeraw", ctx, {"payload": payload, "from": KEY_B})[1]["error"]["reason"] == (
        "not_own_party_key"
    )
    assert call(f"{urls[0]}/storeraw", ctx, {"payload": "not base64!"})[1]["error"]["reason"] == "bad_payload"
    assert call(f"{urls[0]}/storeraw", ctx, raw=b"{nope")[1]["error"]["reason"] == "bad_json"
    assert call(f"{urls[0]}/storeraw", ctx, {"from": KEY_A})[0] == 400
    assert call(f"{urls[1]}/storeraw", ctx, {"payload": payload})[1] != body  # another executor, another salt


def test_private_transactions_refuse_what_is_not_supported(parties: tuple[LocalNetwork, list[str]]) -> None:
    """Clear JSON-RPC errors, before anything reaches the ledger."""
    net, urls = parties
    ctx = pinned(net)
    token = quorum.make_token(
        PrivateKey.from_file(str(net.dir / net.users[0]["key"])), net.opt.ledger, int(time.time()) + 600
    )

    def rpc(params: list[Any], method: str = "eth_sendRawPrivateTransaction") -> dict[str, Any]:
        req = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
        status, body = call(urls[0], ctx, req, token=token)
        assert status == 200 and body["id"] == 7
        return dict(body["error"])

    marker = "0x" + "ab" * 40
    assert "privacyFlag 1 is not supported" in rpc([marker, {"privateFor": [KEY_B], "privacyFlag": 1}])["message"]
    assert "mandatoryFor" in rpc([marker, {"privateFor": [KEY_B], "mandatoryFor": [KEY_B]}])["message"]
    assert "did not register" in rpc([marker, {"privateFor": [KEY_B, base64.b64encode(b"Z" * 32).decode()]}])["message"]
    assert rpc([marker, {"privateFor": []}])["code"] == -32602
    assert rpc([marker])["code"] == -32602
    assert rpc([marker, {"privateFor": [KEY_B]}])["code"] == -32000  # not a transaction at all
    status, body = call(urls[0], ctx, raw=b"{not json", token=token)
    assert status == 200 and body["error"]["code"] == -32700
    nope = {"jsonrpc": "2.0", "id": 1, "method": "eth_nope", "params": []}
    assert call(urls[0], ctx, nope, token=token)[1]["error"]["code"] < 0


def test_party_json_rpc_needs_a_token_of_one_of_the_members_party_owners(
    parties: tuple[LocalNetwork, list[str]],
) -> None:
    net, urls = parties
    ctx = pinned(net)
    req = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
    user0 = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    member1 = net.member_key(1)
    soon = int(time.time()) + 600
    assert call(urls[0], ctx, req, token=quorum.make_token(user0, net.opt.ledger, soon))[0] == 200
    assert call(urls[1], ctx, req, token=quorum.make_token(member1, net.opt.ledger, soon))[0] == 200

    def refused(token: str | None, url: str = urls[0]) -> tuple[int, str]:
        status, body = call(url, ctx, req, token=token)
        return status, body["error"]["message"]

    assert refused(None)[0] == 401
    assert refused(quorum.make_token(user0, net.opt.ledger, int(time.time()) - 1)) == (
        401,
        "the access token has expired",
    )
    assert "another ledger" in refused(quorum.make_token(user0, "other-ledger", soon))[1]
    assert "at most" in refused(quorum.make_token(user0, net.opt.ledger, soon + 30 * 86400))[1]
    assert "not signed by an active" in refused(quorum.make_token(PrivateKey.generate(), net.opt.ledger, soon))[1]
    forged = quorum.make_token(user0, net.opt.ledger, soon).split(".")[0] + "." + "A" * 86
    assert refused(forged)[0] == 401
    assert refused("garbage")[0] == 401
    # member 1 owns a party key, but not one member 0's endpoint serves.
    assert refused(quorum.make_token(member1, net.opt.ledger, soon)) == (
        403,
        "the token's owner has no party key at this member's endpoint",
    )


async def test_stored_payloads_never_reach_the_untrusted_path(parties: tuple[LocalNetwork, list[str]]) -> None:
    """Capture NATS (every subject, replies, the ledger stream), Redis, every process's log (gateway,
    executors) and every executor's data directory while payloads are stored: the marker is nowhere, the party keys
    (public, voted through the ledger) are, so the capture works."""
    net, urls = parties
    marker = b"PRIVATEPAYLOAD" + os.urandom(6).hex().encode()
    seen: list[bytes] = []
    nc = await nats.connect(net.nats_url)

    async def capture(m: nats.aio.msg.Msg) -> None:
        seen.append(m.subject.encode() + b" " + m.data)

    try:
        for subject in (">", "_INBOX.>"):
            await nc.subscribe(subject, cb=capture)
        ctx = pinned(net)
        for i, url in enumerate(urls):
            payload = base64.b64encode(marker + bytes([i])).decode()
            status, _ = await asyncio.to_thread(call, f"{url}/storeraw", ctx, {"payload": payload})
            assert status == 200
        js = nc.jetstream()
        stream = streams.ledger_stream(net.opt.ledger)
        info = await js.stream_info(stream)
        for seq in range(1, info.state.last_seq + 1):
            seen.append((await js.get_msg(stream, seq)).data)
    finally:
        await nc.close()
    r = aioredis.from_url(net.redis_url)
    try:
        async for k in r.scan_iter("*"):
            seen.append(k + b" " + (await r.get(k) or b""))
    finally:
        await r.aclose()
    for f in [*(net.dir / "logs").rglob("*"), *(net.dir / "nodes").rglob("*")]:
        if f.is_file():
            seen.append(f.read_bytes())
    everything = b"\n".join(seen)
    assert KEY_A.encode() in everything, "the capture works: the voted party key is in the ledger"
    for needle in (marker, base64.b64encode(marker)[:-4], marker.hex().encode()):
        assert needle not in everything, f"{needle!r} leaked to the untrusted path"


@pytest.mark.protocol
def test_unmodified_web3js_quorum_ptm_calls(parties: tuple[LocalNetwork, list[str]]) -> None:
    if shutil.which("node") is None or not (QUORUM_JS / "web3js-quorum").is_dir():
        pytest.skip("web3js-quorum is not installed: run scripts/install-tools.sh")
    net, urls = parties
    out = subprocess.run(
        [
            "node",
            str(ROOT / "tests" / "quorum" / "js" / "ptm_flow.js"),
            urls[0],
            str(net.dir / "service_cert.pem"),
            "0x6080604052",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NODE_PATH": str(QUORUM_JS)},
    )
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["up"] == "I'm up!"
    assert got["keys"] == {"keys": [{"key": KEY_A}]}
    assert got["party"] == {"keys": [{"key": k} for k in sorted([KEY_A, KEY_B])]}
    assert len(bytes.fromhex(got["hash"])) == 64  # web3js-quorum hands back the key as hex
    assert got["foreign"]["status"] == 403 and got["foreign"]["body"]["error"]["reason"] == "not_own_party_key"
