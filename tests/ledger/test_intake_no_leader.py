"""The gateway's intake while no intake stream leader answers (a NATS cluster electing one: the
server answers "no responders" at once): the publish is repeated with the same message id until
the publish timeout is spent, so a client submitting during an election is acknowledged after it,
once, instead of receiving a 503; with no leader for the whole timeout it is a 503
(`IntakeUnavailable`), never an acknowledgement. Against a real NATS server, where a stream not
yet created answers exactly like a stream without a leader."""

from __future__ import annotations

import asyncio

import nats
import pytest
from prometheus_client import REGISTRY

from conclavium import streams
from conclavium.block import Entry, Kind
from services.gateway.intake import IntakeBatcher, IntakeUnavailable


def _retries() -> float:
    return REGISTRY.get_sample_value("conclavium_gateway_intake_no_leader_retries_total") or 0.0


async def test_a_publish_waits_out_a_missing_leader(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    ledger = "noleader"
    try:
        batcher = IntakeBatcher(js, ledger, timeout_s=5.0)
        before = _retries()
        entry = Entry(kind=Kind.TX, data=b"a transaction", signature=b"s" * 64)
        submit = asyncio.create_task(batcher.submit([entry]))
        await asyncio.sleep(0.6)
        assert not submit.done(), "answered while no stream could acknowledge"
        await js.add_stream(streams.intake_config(ledger))
        await asyncio.wait_for(submit, 10)
        info = await js.stream_info(streams.intake_stream(ledger))
        assert info.state.messages == 1, "the repeated publishes must land once"
        assert _retries() > before
        await batcher.close()
    finally:
        await js.delete_stream(streams.intake_stream(ledger))
        await nc.close()


async def test_no_leader_for_the_whole_timeout_is_unavailable(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        batcher = IntakeBatcher(nc.jetstream(), "neverthere", timeout_s=0.8)
        entry = Entry(kind=Kind.TX, data=b"another", signature=b"s" * 64)
        with pytest.raises(IntakeUnavailable, match="NoStreamResponseError"):
            await asyncio.wait_for(batcher.submit([entry]), 10)
        await batcher.close()
    finally:
        await nc.close()
