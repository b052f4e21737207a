"""Ledger time through real processes: blocks dated far ahead or far behind, appended to the ledger
stream as a malicious sequencer would, execute at the bound of the executors' signed clocks; the
ledger keeps committing, governance keeps working, the clamp is counted, and an idle ledger keeps
its reference time fresh with clock heartbeats."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from urllib.request import urlopen

import nats
import pytest
from ledger_support import member_keys, user_keys
from rogue_sequencer import append_after_tip, following

from conclavium import streams
from conclavium.block import Block, Entry, Kind, block_hash, decode_block
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork, start_network
from conclavium.sdk.client import Client
from conclavium.tx import make_body, sign

TEN_YEARS_MS = 10 * 365 * 24 * 3600 * 1000
TOLERANCE_S = 30.0
CLAMPED = "conclavium_executor_block_time_clamped_total"
OFFSET = "conclavium_executor_ledger_time_offset_seconds"


def _metric(port: int, name: str, labels: str = "") -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _executor_ports(net: LocalNetwork) -> list[int]:
    return [p.port for n, p in net.procs.items() if n.startswith("executor-")]  # type: ignore[misc]


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _last_stamp(net: LocalNetwork) -> int:
    """The timestamp of the last block in the ledger stream."""
    nc = await nats.connect(net.nats_url)
    try:
        js = nc.jetstream()
        stream = streams.ledger_stream(net.opt.ledger)
        info = await js.stream_info(stream)
        return decode_block((await js.get_msg(stream, info.state.last_seq)).data).ts_ms
    finally:
        await nc.close()


async def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _signed_tx(net: LocalNetwork, key: str) -> Entry:
    user = user_keys(net)[0]
    ops = [{"op": "put", "map": "public:clock", "key": key, "value": 1}]
    t = sign(user, make_body(net.opt.ledger, user.key_id, ops, _now_ms()))
    return Entry(Kind.TX, t.body, t.signature)


async def _rogue_block(net: LocalNetwork, offset_ms: int, key: str) -> Entry:
    """Append a block stamped now + offset_ms holding one fresh transaction."""
    entry = _signed_tx(net, key)

    def rogue(tip: Block, prev: bytes) -> Block:
        return following(tip, prev, [entry], ts_ms=_now_ms() + offset_ms)

    await append_after_tip(net, rogue)
    return entry


async def _counted(net: LocalNetwork, direction: str, before: list[float]) -> None:
    ports = _executor_ports(net)
    label = f'{{direction="{direction}"}}'
    await _wait_for(
        lambda: all(_metric(p, CLAMPED, label) >= b + 1 for p, b in zip(ports, before, strict=True)),
        15,
        f"every executor to count the block as {direction}",
    )


def _clamps(net: LocalNetwork, direction: str) -> list[float]:
    return [_metric(p, CLAMPED, f'{{direction="{direction}"}}') for p in _executor_ports(net)]


async def test_a_block_dated_ten_years_ahead_does_not_brick_the_ledger(network: LocalNetwork) -> None:
    before = _clamps(network, "ahead")
    entry = await _rogue_block(network, TEN_YEARS_MS, "in-the-future-block")
    user = Client(network.gateway_url, user_keys(network)[0])
    members = [Client(network.gateway_url, k) for k in member_keys(network)]
    try:
        st = await user.wait(block_hash(entry.data).hex(), timeout=30)
        assert st["status"] == "Committed", f"a fresh transaction is valid at the bound: {st}"
        t0 = time.monotonic()
        h = await user.put("public:clock", "after-future-block", 2)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
        assert time.monotonic() - t0 < 10, "the next ordinary transaction commits within seconds"
        newcomer = PrivateKey.generate().public_key.pem
        proposal = await members[0].propose([{"name": "set_user", "args": {"name": "clock", "public_key": newcomer}}])
        st = await members[0].wait(proposal["tx_hash"], timeout=30)
        assert st["status"] == "Committed", f"a COSE proposal is not refused as expired: {st}"
        for m in members[:2]:
            ballot = await m.vote(proposal["proposal_id"], approve=True)
            assert (await m.wait(ballot["tx_hash"], timeout=30))["status"] == "Committed"
        assert (await members[0].proposal(proposal["proposal_id"]))["state"] == "Accepted"
    finally:
        for c in [user, *members]:
            await c.close()
    await _counted(network, "ahead", before)
    assert abs(await _last_stamp(network) - _now_ms()) < 60_000, "the sequencer stamps its own clock, not the tip's"
    for port in _executor_ports(network):
        assert _metric(port, OFFSET) < TOLERANCE_S + 5, "ledger time stays within the bound of the clocks"


async def test_a_block_dated_far_behind_is_clamped_up(network: LocalNetwork) -> None:
    before = _clamps(network, "behind")
    entry = await _rogue_block(network, -TEN_YEARS_MS, "in-the-past-block")
    user = Client(network.gateway_url, user_keys(network)[0])
    try:
        st = await user.wait(block_hash(entry.data).hex(), timeout=30)
        assert st["status"] == "Committed", f"a fresh transaction is not in the future of a clamped block: {st}"
        h = await user.put("public:clock", "after-past-block", 3)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
    finally:
        await user.close()
    await _counted(network, "behind", before)
    for port in _executor_ports(network):
        assert _metric(port, OFFSET) > -(TOLERANCE_S + 5), "time is not held back by the stamp"


@pytest.fixture(scope="module")
def short_window_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """Transactions valid for 10 s, a 3 s clock bound: an idle spell of 25 s would leave a
    reference time without heartbeats too old for any fresh transaction."""
    net = start_network(
        tmp_path_factory.mktemp("clock"),
        redis=False,
        genesis_config={"tx_validity_ms": 10_000, "clock_tolerance_ms": 3_000},
    )
    yield net
    net.stop()


async def test_an_idle_ledger_keeps_accepting_transactions(short_window_net: LocalNetwork) -> None:
    net = short_window_net
    ports = _executor_ports(net)
    heartbeat = '{kind="heartbeat"}'
    before = [_metric(p, "conclavium_executor_clock_signatures_total", heartbeat) for p in ports]
    await asyncio.sleep(25)
    user = Client(net.gateway_url, user_keys(net)[0])
    try:
        h = await user.put("public:clock", "after-idle", 1)
        st = await user.wait(h, timeout=20)
        assert st["status"] == "Committed", st
    finally:
        await user.close()
    after = [_metric(p, "conclavium_executor_clock_signatures_total", heartbeat) for p in ports]
    assert all(a >= b + 5 for a, b in zip(after, before, strict=True)), "every signer sends heartbeats when idle"
    for port in ports:
        assert abs(_metric(port, OFFSET)) < 3 + 5
