"""The sequencer lease against a real NATS KV bucket: one holder at a time, take-over only after a
whole TTL without renewal, immediate take-over after a release, and no false loss when a renewal's
answer was lost."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from nats.js.api import KeyValueConfig, StorageType

from conclavium.runtime import connect_nats
from services.sequencer.lease import Lease

TTL = 0.6


async def _bucket(nats_url: str, name: str) -> tuple[Any, Any]:
    nc = await connect_nats(nats_url, "lease-test")
    js = nc.jetstream(timeout=2)
    kv = await js.create_key_value(KeyValueConfig(bucket=name, history=1, storage=StorageType.FILE))
    return nc, kv


async def test_one_holder_and_take_over_after_a_whole_ttl(nats_url: str) -> None:
    nc, kv = await _bucket(nats_url, "LEASE_TAKEOVER")
    try:
        a, b = Lease(kv, "a", TTL), Lease(kv, "b", TTL)
        assert await a.try_acquire() and a.valid()
        assert not await b.try_acquire()
        for _ in range(6):
            await asyncio.sleep(a.renew_every_s)
            assert await a.renew()
            assert not await b.try_acquire(), "a standby claimed a lease that is being renewed"
        stopped = time.monotonic()
        for _ in range(200):
            if await b.try_acquire():
                break
            await asyncio.sleep(0.02)
        waited = time.monotonic() - stopped
        assert TTL - a.renew_every_s <= waited <= TTL + 0.3, waited
        assert not a.valid(), "the old holder still counted its lease valid when the standby took over"
        assert not await a.renew() and not a.valid()
        assert b.term == 1 and b.valid()
    finally:
        await nc.close()


async def test_release_hands_over_at_once(nats_url: str) -> None:
    nc, kv = await _bucket(nats_url, "LEASE_RELEASE")
    try:
        a, b = Lease(kv, "a", TTL), Lease(kv, "b", TTL)
        assert await a.try_acquire()
        assert not await b.try_acquire()
        await a.release()
        assert not a.valid() and await b.try_acquire()
    finally:
        await nc.close()


async def test_a_renewal_stored_without_answer_is_not_a_loss(nats_url: str) -> None:
    nc, kv = await _bucket(nats_url, "LEASE_LOST_ANSWER")
    try:
        a, b = Lease(kv, "a", TTL), Lease(kv, "b", TTL)
        assert await a.try_acquire()
        await a._write(a.revision, a.name)
        assert await a.renew() and a.valid()
        assert not await b.try_acquire()
    finally:
        await nc.close()
