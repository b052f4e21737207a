"""Typed verification results and the errors that name the failed check.

Every verifier returns the same `Claims` shape so the executor and the policy code never need to know
which TEE produced the evidence. Failures raise `VerificationError` with a stable `check` name (the
names match the vector MANIFESTs), so operators and tests can tell *which* step refused the evidence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

PLATFORMS: tuple[str, ...] = ("snp", "tdx", "sgx", "virtual")


class AttestationError(Exception):
    """Base of everything this package raises on bad evidence or policy."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "message": self.message}


class VerificationError(AttestationError):
    """The evidence is not authentic (bad format, signature, chain, collateral)."""


class PolicyError(AttestationError):
    """The evidence is authentic but the policy refuses it, or the policy itself is invalid."""


@dataclass
class Claims:
    """What verified evidence says about a TEE. Hex fields are lower-case.

    `status` is the platform TCB status: Intel's status from TCB info collateral (`UpToDate`,
    `OutOfDate`, ..., `TCBLevelNotSupported`), `Unknown` when no status can be computed (SNP, or Intel
    without collateral), `Insecure` for virtual evidence. `reasons` lists notable facts found during
    verification (advisories, stale collateral, trailing bytes, debug) that policy may act on.
    """

    platform: str
    measurement: str
    host_data: str
    report_data: str
    tcb: dict[str, Any]
    debug: bool
    chip_id: str
    status: str
    reasons: list[str] = field(default_factory=list)
    product: str = ""
    verified_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Claims:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def iso(ts: datetime) -> str:
    """RFC 3339 UTC timestamp with a Z suffix."""
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def require_aware(at: datetime) -> datetime:
    """Verification times must carry a timezone: a naive time is ambiguous by hours."""
    if not isinstance(at, datetime) or at.tzinfo is None:
        raise VerificationError("verification_time", "verification time must be a timezone-aware datetime")
    return at
