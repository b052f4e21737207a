"""Attestation evidence verification for SEV-SNP, TDX, SGX DCAP and (development-only) virtual.

Pure library: no I/O, no services, no wall clock. Every call takes the verification time. Used by
the attestation service and by executors, which re-check joiners' evidence themselves.

    claims = verify_evidence("snp", report, certs=[vcek_der], at=now)
    evaluate_policy(claims, policy, public_keys=[spki, ...]).raise_for_failure()
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from .claims import PLATFORMS, AttestationError, Claims, PolicyError, VerificationError
from .intel import verify_intel
from .policy import Policy, PolicyResult, evaluate_policy, expected_report_data, load_policy
from .snp import verify_snp
from .virtual import make_virtual_evidence, parse_virtual

__all__ = [
    "PLATFORMS",
    "AttestationError",
    "Claims",
    "Policy",
    "PolicyError",
    "PolicyResult",
    "VerificationError",
    "evaluate_policy",
    "expected_report_data",
    "load_policy",
    "make_virtual_evidence",
    "verify_and_evaluate",
    "verify_evidence",
]


def verify_evidence(
    platform: str,
    evidence: bytes,
    *,
    certs: Sequence[bytes] = (),
    collateral: Mapping[str, bytes] | None = None,
    event_log: bytes | None = None,
    at: datetime,
    policy: Policy | None = None,
) -> Claims:
    """Check that `evidence` is authentic for `platform` at time `at` and return its claims.

    snp: `certs` holds the VCEK/VLEK (and optionally ASK/ASVK, ARK); `collateral` may hold the AMD
    KDS CRL (`amd_crl.der`). tdx/sgx: the quote carries its PCK chain; `collateral` maps names like
    `tcb_info.json` to bytes; a TDX `event_log` (CCEL) must replay to the quote's RTMRs. virtual:
    refused unless `policy` is given and allows it. Raises `VerificationError` naming the failed check.
    """
    if event_log and platform != "tdx":
        raise VerificationError("event_log_platform", f"an event log replays TDX RTMRs; {platform} evidence has none")
    if platform == "snp":
        return verify_snp(evidence, certs=certs, collateral=collateral, at=at)
    if platform in ("tdx", "sgx"):
        return verify_intel(platform, evidence, collateral=collateral, event_log=event_log or None, at=at)
    if platform == "virtual":
        if policy is None or not policy.allows_platform("virtual"):
            raise VerificationError("virtual_not_allowed", "virtual evidence is refused unless the policy allows it")
        return parse_virtual(evidence, at=at)
    raise VerificationError("platform", f"unknown platform {platform!r}; expected one of {PLATFORMS}")


def verify_and_evaluate(
    platform: str,
    evidence: bytes,
    policy: Policy,
    *,
    public_keys: list[bytes],
    certs: Sequence[bytes] = (),
    collateral: Mapping[str, bytes] | None = None,
    event_log: bytes | None = None,
    at: datetime,
) -> Claims:
    """What an executor does with a join request: verify, then enforce the policy (raises on refusal)."""
    claims = verify_evidence(
        platform, evidence, certs=certs, collateral=collateral, event_log=event_log, at=at, policy=policy
    )
    evaluate_policy(claims, policy, public_keys=public_keys, at=at).raise_for_failure()
    return claims
