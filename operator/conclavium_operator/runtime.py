"""What handlers share within one operator run, kept in kopf's `memo` (one per `kopf.operator()`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import kopf

from conclavium_operator.config import OperatorConfig
from conclavium_operator.gateway import Gateway
from conclavium_operator.kube import Kube


@dataclass
class Runtime:
    cfg: OperatorConfig
    gateway: Gateway
    kube: Kube | None = None
    # Create/update handlers and the timer of one object run concurrently in kopf; governance steps
    # (look up, then propose) must not interleave for the same object.
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # When each executor (by uid) was last re-verified (time.monotonic()), passed or not.
    reverified: dict[str, float] = field(default_factory=dict)

    def lock(self, uid: str) -> asyncio.Lock:
        return self.locks.setdefault(uid, asyncio.Lock())

    @property
    def k8s(self) -> Kube:
        if self.kube is None:
            raise kopf.TemporaryError("not logged in to the Kubernetes API yet", delay=1)
        return self.kube


def runtime(memo: Any) -> Runtime:
    rt = getattr(memo, "conclavium", None)
    if rt is None:
        raise kopf.TemporaryError("operator not started yet", delay=1)
    return rt  # type: ignore[no-any-return]
