"""The notary through real processes: NATS JetStream, three executors (one per member), the
sequencer, two gateways and Redis. Double spends raced by two parties through two gateways,
conflicts across blocks, replays, bad tear-offs, time windows, unknown parties, the private
who-consumed lookup, and an executor killed while requests are in flight (exactly once)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from fault_support import verify_exactly_once
from gateway_proxy import serving
from ledger_support import (
    agreeing_roots,
    identity,
    member_keys,
    raw_post,
    service_cert,
    status_everywhere,
    user_keys,
)
from notary_support import corda_tx, fresh_ref
from rogue_sequencer import append_entries_after_tip

from conclavium.apps import app_entry
from conclavium.crypto import sealing
from conclavium.encoding import b64e, canonical_json
from conclavium.local.network import LocalNetwork
from conclavium.local.processes import Process, free_port
from conclavium.notary import TimeWindow, make, verify_notarisation
from conclavium.notary.request import NOTARY_GROUPS, reply_context
from conclavium.receipt import ReceiptError
from conclavium.sdk.client import Client, ClientError
from conclavium.sdk.notary import NotaryClient, NotaryRefused

LEDGER = "local"


def enable_notary_by_vote(net: LocalNetwork, parties: list[str]) -> None:
    async def vote() -> None:
        members = [Client(net.gateway_url, k, ledger=LEDGER) for k in member_keys(net)]
        try:
            actions = [
                {"name": "set_applications", "args": {"applications": ["kv", "notary"]}},
                {"name": "set_notary_parties", "args": {"parties": parties}},
            ]
            proposal = await members[0].propose(actions)
            await members[0].wait(proposal["tx_hash"])
            for c in members[:2]:
                await c.wait((await c.vote(proposal["proposal_id"], approve=True))["tx_hash"])
            assert (await members[0].proposal(proposal["proposal_id"]))["state"] == "Accepted"
        finally:
            for c in members:
                await c.close()

    asyncio.run(vote())


@pytest.fixture(scope="module")
def notary_net(network: LocalNetwork) -> Iterator[tuple[LocalNetwork, str]]:
    """The module's network with the notary enabled for both users, and a second gateway."""
    enable_notary_by_vote(network, [k.key_id for k in user_keys(network)])
    gw = network.procs["gateway"]
    port = free_port()
    argv = list(gw.argv)
    argv[argv.index("--port") + 1] = str(port)
    second = Process("gateway-2", argv, network.dir / "logs" / "gateway-2.log", port=port)
    second.start()
    second.wait_ready()
    try:
        yield network, f"http://127.0.0.1:{port}"
    finally:
        second.stop()


@pytest.fixture
async def parties(notary_net: tuple[LocalNetwork, str]) -> AsyncIterator[tuple[NotaryClient, NotaryClient]]:
    """Party A through the first gateway, party B through the second, both pinning the certificate."""
    net, second = notary_net
    a_key, b_key = user_keys(net)
    cert = service_cert(net)
    a = Client(net.gateway_url, a_key, ledger=LEDGER, service_cert=cert, consortium=identity(net))
    b = Client(second, b_key, ledger=LEDGER, service_cert=cert, consortium=identity(net))
    yield NotaryClient(a), NotaryClient(b)
    await a.close()
    await b.close()


async def _outcome(n: NotaryClient, req: Any) -> tuple[str, Any]:
    try:
        return "notarised", await n.wait(req, timeout=60)
    except NotaryRefused as e:
        return e.reason, e


async def test_two_parties_racing_for_one_state_through_two_gateways(
    notary_net: tuple[LocalNetwork, str], parties: tuple[NotaryClient, NotaryClient]
) -> None:
    net, _ = notary_net
    a, b = parties
    for _ in range(10):
        shared = fresh_ref()
        wtx_a, wtx_b = corda_tx(LEDGER, [shared, fresh_ref()]), corda_tx(LEDGER, [shared])
        req_a, req_b = await a.build_for(wtx_a), await b.build_for(wtx_b)
        await asyncio.gather(a.submit(req_a), b.submit(req_b))
        results = dict(zip("ab", await asyncio.gather(_outcome(a, req_a), _outcome(b, req_b)), strict=True))
        assert sorted(kind for kind, _ in results.values()) == ["conflict", "notarised"], results
        winner = "a" if results["a"][0] == "notarised" else "b"
        won_tx = (wtx_a if winner == "a" else wtx_b).id
        refused = results["b" if winner == "a" else "a"][1]
        assert refused.detail["consumed_states"] == {
            shared: {"hash_of_transaction_id": hashlib.sha256(won_tx).hexdigest(), "type": "INPUT_STATE"}
        }
        proof = results[winner][1].proof
        assert proof is not None and proof.tx_id == won_tx.hex() and len(proof.signers) >= 2
    await agreeing_roots(net)


async def test_conflicts_across_blocks_replays_and_idempotent_retries(
    notary_net: tuple[LocalNetwork, str], parties: tuple[NotaryClient, NotaryClient]
) -> None:
    net, _ = notary_net
    a, b = parties
    x, y = fresh_ref(), fresh_ref()
    wtx = corda_tx(LEDGER, [x, y])
    first = await a.notarise(wtx)
    # a later block: B's transaction spends y again
    with pytest.raises(NotaryRefused) as refused:
        await b.notarise(corda_tx(LEDGER, [fresh_ref(), y]))
    assert refused.value.reason == "conflict" and list(refused.value.detail["consumed_states"]) == [y]
    # replay of the very same request bytes: the same request hash, the same answer
    assert await a.submit(first.request) == first.request.hash
    again = await a.wait(first.request)
    assert again.receipt["height"] == first.receipt["height"]
    # a reference to a consumed state is a conflict too, of type REFERENCE_STATE
    with pytest.raises(NotaryRefused) as by_ref:
        await b.notarise(corda_tx(LEDGER, [fresh_ref()], references=[x]))
    assert by_ref.value.detail["consumed_states"][x]["type"] == "REFERENCE_STATE"
    # a new request for the same transaction (another timestamp) is notarised again, same statement
    retry = await b.notarise(wtx)
    assert retry.request.hash != first.request.hash
    assert retry.receipt["write_digest"] == first.receipt["write_digest"]
    # the receipt is the consortium's signature over the tx id, offline, with the certificate only
    proof = verify_notarisation(first.receipt, first.request, identity(net))
    assert proof.tx_id == wtx.id.hex() and proof.inputs == [x, y]
    with pytest.raises(ReceiptError, match="wrong_transaction"):  # a receipt shown with another request
        verify_notarisation(first.receipt, retry.request, identity(net))
    tampered = {**first.receipt, "write_digest": retry.receipt["tx_hash"]}
    with pytest.raises(ReceiptError, match="bad_inclusion_proof"):
        verify_notarisation(tampered, first.request, identity(net))


async def test_refusals_are_clear(
    notary_net: tuple[LocalNetwork, str], parties: tuple[NotaryClient, NotaryClient]
) -> None:
    net, _ = notary_net
    a, _ = parties
    user_a = user_keys(net)[0]
    # a tampered tear-off: the request claims another input than the transaction's
    wtx = corda_tx(LEDGER, [fresh_ref()])
    lie = make(user_a, LEDGER, wtx.id.hex(), [fresh_ref()], [], None, wtx.tear_off(NOTARY_GROUPS))
    await a.submit(lie)
    with pytest.raises(NotaryRefused, match="bad_tear_off"):
        await a.wait(lie)
    # time windows, against the ledger's time
    now = int(time.time() * 1000)
    for window, expected in ((TimeWindow(now + 3_600_000, None), "before"), (TimeWindow(None, now - 60_000), "after")):
        req = await a.build_for(corda_tx(LEDGER, [fresh_ref()], window=window))
        await a.submit(req)
        with pytest.raises(NotaryRefused) as e:
            await a.wait(req)
        assert e.value.reason == "time_window_invalid", expected
        assert e.value.detail["time_window"] == window.to_json()
    inside = await a.notarise(corda_tx(LEDGER, [fresh_ref()], window=TimeWindow(now - 60_000, now + 600_000)))
    assert inside.proof is not None
    # a member who is no notary party
    stranger = NotaryClient(Client(net.gateway_url, member_keys(net)[0], ledger=LEDGER))
    try:
        req = await stranger.build_for(corda_tx(LEDGER, [fresh_ref()]))
        await stranger.submit(req)
        with pytest.raises(NotaryRefused, match="unknown_party"):
            await stranger.wait(req)
        with pytest.raises(ClientError) as denied:
            await stranger.who_consumed(fresh_ref())
        assert denied.value.status == 401 and denied.value.code == "unknown_party"
    finally:
        await stranger.c.close()
    # malformed requests never reach the ledger: 400 with the reason
    status, body = await raw_post(f"{net.gateway_url}/v1/notary/requests", b'{"requests": [{"body": "x"}]}')
    assert status == 400 and body["error"]["code"] == "missing_field" and "request 0" in body["error"]["message"]
    bad = make(user_a, LEDGER, wtx.id.hex(), [fresh_ref()], ts_ms=now)
    status, body = await raw_post(
        f"{net.gateway_url}/v1/notary/requests", json.dumps({**bad.to_json(), "body": b64e(b'{"v": 1}')})
    )
    assert status == 400 and body["error"]["code"] == "invalid_body"


async def test_who_consumed_answers_the_consuming_party_only(
    parties: tuple[NotaryClient, NotaryClient],
) -> None:
    a, b = parties
    x = fresh_ref()
    wtx = corda_tx(LEDGER, [x])
    await a.notarise(wtx)
    mine = await a.who_consumed(x)
    assert mine["consumed"] is True and mine["tx_id"] == wtx.id.hex()
    theirs = await b.who_consumed(x)
    assert theirs["consumed"] is True and "tx_id" not in theirs
    assert theirs["hash_of_transaction_id"] == hashlib.sha256(wtx.id).hexdigest()
    assert (await b.who_consumed(fresh_ref()))["consumed"] is False


async def test_a_forged_who_consumed_answer_is_refused(notary_net: tuple[LocalNetwork, str]) -> None:
    """A gateway answering who-consumed with "not consumed", sealed to the query's reply key (it
    travels in clear): the executor's signature no longer covers the answer, and a party holding
    the consortium identity refuses it."""
    net, _ = notary_net
    a_key, _ = user_keys(net)
    port = free_port()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {"Content-Type": request.content_type}
        async with (
            aiohttp.ClientSession() as s,
            s.request(request.method, net.gateway_url + request.path_qs, data=body, headers=headers) as r,
        ):
            status, data = r.status, await r.json(content_type=None)
        if request.path == "/v1/notary/who-consumed" and status == 200:
            raw = base64.b64decode(json.loads(body)["body"])
            lie = canonical_json({"state": json.loads(raw)["state"], "consumed": False, "height": 1})
            box = sealing.seal(lie, bytes.fromhex(json.loads(raw)["reply_key"]), reply_context(raw))
            data = {**data, "sealed": b64e(box)}
        return web.json_response(data, status=status)

    x = fresh_ref()
    async with serving(handle, port):
        url = f"http://127.0.0.1:{port}"
        c = Client(url, a_key, ledger=LEDGER, service_cert=service_cert(net), consortium=identity(net))
        try:
            party = NotaryClient(c)
            await party.notarise(corda_tx(LEDGER, [x]))
            with pytest.raises(ClientError) as e:
                await party.who_consumed(x)
            assert (e.value.code, e.value.reason) == ("unverified_read", "bad_signature")
        finally:
            await c.close()
        unchecked = Client(f"http://127.0.0.1:{port}", a_key, ledger=LEDGER)
        try:  # what a party without the identity would have believed
            assert (await NotaryClient(unchecked).who_consumed(x))["consumed"] is False
        finally:
            await unchecked.close()


async def test_an_executor_killed_while_requests_are_in_flight(
    notary_net: tuple[LocalNetwork, str], parties: tuple[NotaryClient, NotaryClient]
) -> None:
    net, _ = notary_net
    a, _ = parties
    reqs = [await a.build_for(corda_tx(LEDGER, [fresh_ref(), fresh_ref()])) for _ in range(400)]
    acked: list[str] = []
    victim = net.procs["executor-1"]
    for i in range(0, len(reqs), 50):
        if i == 150:
            victim.kill()
        if i == 300:
            victim.start()
        acked += await a.submit_batch(reqs[i : i + 50])
    await _ready(victim)
    report = await verify_exactly_once(net, acked, timeout=120)
    assert report is not None
    # every one notarised (each names its own states), and a replay of them all changes nothing
    statuses = [await a.status(h) for h in acked]
    assert {s["status"] for s in statuses} == {"Committed"}
    assert await a.submit_batch(reqs[:100]) == acked[:100]
    for h, before in zip(acked[:100], statuses[:100], strict=True):
        assert (await a.status(h))["height"] == before["height"]
    await agreeing_roots(net, timeout=60)


async def _ready(proc: Process, timeout: float = 90.0) -> None:
    """Until the restarted executor has caught up and signs again (its /readyz answers 200)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{proc.port}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name} not ready after {timeout}s:\n{proc.log_tail()}")
        await asyncio.sleep(0.3)


async def test_hostile_entries_ordered_anyway_are_invalid_everywhere_and_the_notary_goes_on(
    notary_net: tuple[LocalNetwork, str], parties: tuple[NotaryClient, NotaryClient]
) -> None:
    """What a gateway that skips its checks (or a rogue sequencer) could order: every such entry
    ends Invalid with its reason on every executor, and notarisation goes on."""
    net, _ = notary_net
    a, _ = parties
    key = user_keys(net)[0]
    now = int(time.time() * 1000)
    head = (
        b'{"inputs":["'
        + b"a" * 64
        + b':0"],"ledger":"local","party":"'
        + key.key_id.encode()
        + b'","references":[],"ts":'
        + str(now).encode()
        + b',"tx_id":"'
        + b"b" * 64
        + b'","v":1'
    )
    deep = head + b',"filtered":{"id":' + b"[" * 20_000 + b"]" * 20_000 + b"}}"
    wtx = corda_tx(LEDGER, [fresh_ref()])
    ftx = wtx.tear_off(NOTARY_GROUPS).to_json()
    ftx["groups"][0]["components"] = ["AA=="] * 600
    ftx["groups"][0]["nonces"] = ["00" * 32] * 600
    many = head.replace(b"b" * 64, wtx.id.hex().encode()) + b',"filtered":' + json.dumps(ftx).encode() + b"}"
    unsigned = make(key, LEDGER, corda_tx(LEDGER, [fresh_ref()]).id.hex(), [fresh_ref()])
    hostile = {
        "nests too deeply": (deep, key.sign(deep), "invalid_body"),
        "not JSON": (b"\xff\x00garbage", b"", "invalid_body"),
        "too many components": (many, key.sign(many), "bad_tear_off"),
        "signed by another key": (unsigned.body, member_keys(net)[0].sign(unsigned.body), "bad_signature"),
    }
    entries = [app_entry("notary", body, sig) for body, sig, _ in hostile.values()]
    await append_entries_after_tip(net, entries)
    for (name, (_, _, code)), e in zip(hostile.items(), entries, strict=True):
        answers = await status_everywhere(net, hashlib.sha256(e.data).hexdigest(), "Invalid")
        assert {(x.get("status"), x.get("reason")) for x in answers.values()} == {("Invalid", code)}, (name, answers)
    assert (await a.notarise(corda_tx(LEDGER, [fresh_ref()]))).proof is not None
    await agreeing_roots(net)
