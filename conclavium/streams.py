"""NATS names and stream settings for one ledger: the only place that spells them.

- intake stream: entries from gateways and commit signatures from executors, drained by the
  sequencer (work-queue retention: a message leaves once the sequencer acknowledged it, which it
  does only after the block holding it is durable in the ledger stream);
- ledger stream: the hash-chained blocks, kept forever;
- sequencer KV bucket: the active sequencer's lease and the last appended block (the tip);
- core NATS subjects for status events and request/reply queries to executors.
"""

from __future__ import annotations

import asyncio
import logging
import re

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

LEDGER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
MAX_BLOCK_BYTES = 8 * 1024 * 1024
log = logging.getLogger("conclavium")


def check_ledger_id(ledger: str) -> str:
    if not LEDGER_ID.match(ledger):
        raise ValueError("ledger id: 1-32 characters of a-z, 0-9 and '-', starting alphanumeric")
    return ledger


def _up(ledger: str) -> str:
    return ledger.upper().replace("-", "_")


def intake_stream(ledger: str) -> str:
    return f"CV_INTAKE_{_up(ledger)}"


def intake_subject(ledger: str) -> str:
    return f"cv.{ledger}.intake"


def ledger_stream(ledger: str) -> str:
    return f"CV_LEDGER_{_up(ledger)}"


def ledger_subject(ledger: str) -> str:
    return f"cv.{ledger}.ledger"


def sequencer_bucket(ledger: str) -> str:
    return f"CV_SEQ_{_up(ledger)}"


SEQUENCER_LEASE_KEY = "lease"
"""The key of the active sequencer's lease in the sequencer bucket: JSON {"holder", "ttl_ms", "incarnation"}."""


def status_subject(ledger: str) -> str:
    return f"cv.{ledger}.status"


def query_subject(ledger: str) -> str:
    """Queries any executor answers (queue group `executors`)."""
    return f"cv.{ledger}.query"


def every_executor_subject(ledger: str) -> str:
    """Queries every executor answers (no queue group): the transaction key's vouches
    (`conclavium.tx_key_vouch`), which need the word of many nodes."""
    return f"cv.{ledger}.query-all"


def node_query_subject(ledger: str, node_name: str) -> str:
    """Queries for one named executor (local status, per-node attestation)."""
    return f"cv.{ledger}.node.{node_name}.query"


EXECUTOR_QUEUE = "executors"


def intake_config(ledger: str, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=intake_stream(ledger),
        subjects=[intake_subject(ledger)],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        max_msg_size=MAX_BLOCK_BYTES,
        discard=DiscardPolicy.NEW,
    )


def ledger_config(ledger: str, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=ledger_stream(ledger),
        subjects=[ledger_subject(ledger)],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=120.0,
        max_msg_size=MAX_BLOCK_BYTES + 64 * 1024,
        discard=DiscardPolicy.NEW,
    )


async def _ensure_stream(js, cfg: StreamConfig) -> None:  # type: ignore[no-untyped-def]
    from nats.js.errors import BadRequestError, NotFoundError

    try:
        await js.stream_info(cfg.name)
    except NotFoundError:
        try:
            await js.add_stream(cfg)
        except BadRequestError:  # created meanwhile by another service
            await js.stream_info(cfg.name)


async def ensure_streams(js, ledger: str, replicas: int = 1, patience_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Create the ledger's streams if absent; every service calls this, so start order is free.
    A JetStream that is slow to answer (busy disks, a cluster electing its leader) is waited for
    up to `patience_s` rather than ending the process on its first timeout (nats-py's timeouts
    are `TimeoutError`s). So is a stream another service is creating at that moment: on a cluster,
    its name is taken (`add_stream` refused) before the stream is found (`stream_info` 404)."""
    from nats.js.errors import NotFoundError, ServiceUnavailableError

    deadline = asyncio.get_running_loop().time() + patience_s
    for cfg in (intake_config(ledger, replicas), ledger_config(ledger, replicas)):
        while True:
            try:
                await _ensure_stream(js, cfg)
                break
            except (TimeoutError, ServiceUnavailableError, NotFoundError) as e:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("stream %s not ready (%s); retrying", cfg.name, e)
                await asyncio.sleep(0.5)
