"""Prometheus metrics of the operator (kopf has no exporter of its own).

`conclavium_operator_reconcile_total{kind,result}` is what the chart's alert counts
(`result="error"`), so every reconcile path goes through `counted`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, start_http_server

from conclavium_operator.errors import Waiting

P = ParamSpec("P")
T = TypeVar("T")

RECONCILES = Counter(
    "conclavium_operator_reconcile_total",
    "Reconciliations by resource kind and result (ok or error).",
    ["kind", "result"],
)
PROPOSALS = Counter(
    "conclavium_operator_proposals_total",
    "Governance proposals submitted by the operator, by action.",
    ["action"],
)
DOCUMENTS_FORWARDED = Counter(
    "conclavium_operator_documents_forwarded_total",
    "Governance documents members signed offline that the operator forwarded, by type and result "
    "(Committed, Invalid, Refused).",
    ["type", "result"],
)
REVERIFICATIONS = Counter(
    "conclavium_operator_reverifications_total",
    "Periodic re-verifications of executors' attestation, by result (the node's Reverified reason).",
    ["result"],
)

_started: set[int] = set()


def start(port: int, registry: CollectorRegistry = REGISTRY, host: str = "0.0.0.0") -> bool:
    """Serve /metrics once per port and process (tests start several operators in one process), on
    `host` (the pod IP when the chart passes it)."""
    if port <= 0 or port in _started:
        return False
    start_http_server(port, addr=host, registry=registry)
    _started.add(port)
    return True


def counted(kind: str) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Count a handler's outcome: ok on return or while waiting for a vote, error on any other exception."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = await fn(*args, **kwargs)
            except Waiting:
                RECONCILES.labels(kind, "ok").inc()
                raise
            except Exception:
                RECONCILES.labels(kind, "error").inc()
                raise
            RECONCILES.labels(kind, "ok").inc()
            return result

        return inner

    return wrap


def value(kind: str, result: str) -> float:
    """Current counter value (tests and debugging)."""
    sample: Any = RECONCILES.labels(kind, result)
    return float(sample._value.get())


def reverified(result: str) -> float:
    """Current re-verification count for `result` (tests and debugging)."""
    sample: Any = REVERIFICATIONS.labels(result)
    return float(sample._value.get())
