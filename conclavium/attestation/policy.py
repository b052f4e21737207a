"""Attestation policy: which verified evidence may join the consortium.

Verification (`verify_evidence`) answers "is this evidence authentic?"; the policy answers "do we
accept this node?". The policy comes from governance as JSON (format in docs/attestation.md).
`environment: production` makes `virtual` impossible to allow, at load time and again at evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .claims import PLATFORMS, Claims, PolicyError

INTEL = ("tdx", "sgx")
TRAILING_MODES = ("none", "zeros", "any")


def expected_report_data(public_keys: list[bytes]) -> bytes:
    """The 64-byte REPORT_DATA a node must put in its evidence.

    SHA-256 over the concatenation of the node's public keys as DER SubjectPublicKeyInfo, in the
    order the join request lists them, followed by 32 zero bytes. Binding the keys means evidence
    cannot be replayed for a different key pair.
    """
    if not public_keys:
        raise ValueError("at least one public key is required")
    return hashlib.sha256(b"".join(public_keys)).digest() + b"\0" * 32


@dataclass(frozen=True)
class MeasurementRule:
    """One allowed (platform, measurement[, host data]) combination."""

    measurement: str
    platform: str | None = None
    host_data: str | None = None

    def matches(self, claims: Claims) -> bool:
        return (
            (self.platform is None or self.platform == claims.platform)
            and self.measurement == claims.measurement
            and (self.host_data is None or self.host_data == claims.host_data)
        )


@dataclass(frozen=True)
class Policy:
    """A parsed, validated policy. Defaults are the strict choice."""

    environment: str = "production"
    platforms: tuple[str, ...] = ("snp", "tdx", "sgx")
    measurements: tuple[MeasurementRule, ...] = ()
    any_measurement: bool = False
    host_data: tuple[str, ...] = ()
    minimum_tcb: dict[str, dict[str, int]] = field(default_factory=dict)
    allow_debug: bool = False
    tcb_statuses: tuple[str, ...] = ("UpToDate",)
    require_fresh_collateral: bool = True
    collateral_max_age: timedelta | None = None
    report_data: str = "prefix"
    snp_vmpls: tuple[int, ...] = (0,)
    allow_migration_agent: bool = False
    trailing_bytes: str = "zeros"

    def allows_platform(self, platform: str) -> bool:
        if platform == "virtual" and self.environment == "production":
            return False
        return platform in self.platforms


def _hexlist(values: Any, name: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise PolicyError("policy_format", f"{name} must be a list")
    out = []
    for v in values:
        try:
            out.append(bytes.fromhex(v).hex())
        except (ValueError, TypeError) as e:
            raise PolicyError("policy_format", f"{name} entries must be hex strings") from e
    return tuple(out)


def load_policy(source: dict[str, Any] | bytes | str) -> Policy:
    """Parse and validate a policy document (dict or JSON text)."""
    try:
        doc = json.loads(source) if isinstance(source, bytes | str) else source
    except ValueError as e:
        raise PolicyError("policy_format", f"policy is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PolicyError("policy_format", "policy must be a JSON object")
    known = {
        "environment",
        "platforms",
        "measurements",
        "host_data",
        "minimum_tcb",
        "allow_debug",
        "tcb_statuses",
        "collateral",
        "report_data",
        "snp",
        "trailing_bytes",
    }
    unknown = set(doc) - known
    if unknown:
        raise PolicyError("policy_format", f"unknown policy keys {sorted(unknown)}")
    env = doc.get("environment", "production")
    if env not in ("production", "development"):
        raise PolicyError("policy_format", "environment must be 'production' or 'development'")
    platforms = tuple(doc.get("platforms", ("snp", "tdx", "sgx")))
    if any(p not in PLATFORMS for p in platforms):
        raise PolicyError("policy_format", f"platforms must be among {PLATFORMS}")
    if env == "production" and "virtual" in platforms:
        raise PolicyError("virtual_not_allowed", "a production policy cannot allow virtual evidence")
    allow_debug = bool(doc.get("allow_debug", False))
    if env == "production" and allow_debug:
        raise PolicyError("debug_not_allowed", "a production policy cannot allow debug TEEs")
    rules: list[MeasurementRule] = []
    raw_measurements = doc.get("measurements", [])
    any_measurement = raw_measurements == "any"
    if any_measurement:
        if env == "production":
            raise PolicyError("policy_format", "a production policy must list its measurements")
        raw_measurements = []
    if not isinstance(raw_measurements, list):
        raise PolicyError("policy_format", "measurements must be a list (or 'any' in development)")
    for entry in raw_measurements:
        if isinstance(entry, str):
            entry = {"measurement": entry}
        if not isinstance(entry, dict) or "measurement" not in entry:
            raise PolicyError("policy_format", "each measurement is a hex string or {measurement, ...}")
        host = entry.get("host_data")
        rules.append(
            MeasurementRule(
                measurement=_hexlist([entry["measurement"]], "measurement")[0],
                platform=entry.get("platform"),
                host_data=_hexlist([host], "host_data")[0] if host is not None else None,
            )
        )
    minimum: dict[str, dict[str, int]] = {}
    for product, comps in dict(doc.get("minimum_tcb", {})).items():
        if not isinstance(comps, dict) or not all(isinstance(v, int) for v in comps.values()):
            raise PolicyError("policy_format", f"minimum_tcb.{product} must map components to integers")
        minimum[str(product)] = dict(comps)
    collateral = doc.get("collateral", {})
    max_age = collateral.get("max_age_seconds")
    report_mode = doc.get("report_data", "prefix")
    if report_mode not in ("prefix", "exact", "none"):
        raise PolicyError("policy_format", "report_data must be 'prefix', 'exact' or 'none'")
    if env == "production" and report_mode == "none":
        raise PolicyError("policy_format", "a production policy must bind the node's keys in report_data")
    trailing = doc.get("trailing_bytes", "zeros")
    if trailing not in TRAILING_MODES:
        raise PolicyError("policy_format", f"trailing_bytes must be one of {TRAILING_MODES}")
    snp = doc.get("snp", {})
    return Policy(
        environment=env,
        platforms=platforms,
        measurements=tuple(rules),
        any_measurement=any_measurement,
        host_data=_hexlist(doc.get("host_data", []), "host_data"),
        minimum_tcb=minimum,
        allow_debug=allow_debug,
        tcb_statuses=tuple(doc.get("tcb_statuses", ("UpToDate",))),
        require_fresh_collateral=bool(collateral.get("require_fresh", True)),
        collateral_max_age=timedelta(seconds=int(max_age)) if max_age is not None else None,
        report_data=report_mode,
        snp_vmpls=tuple(int(v) for v in snp.get("vmpl", [0])),
        allow_migration_agent=bool(snp.get("allow_migration_agent", False)),
        trailing_bytes=trailing,
    )


@dataclass
class PolicyResult:
    """The decision with every failed rule, so operators see all problems at once."""

    allowed: bool
    failures: list[tuple[str, str]] = field(default_factory=list)

    def raise_for_failure(self) -> None:
        if self.failures:
            check, message = self.failures[0]
            raise PolicyError(check, message)

    def to_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "failures": [{"check": c, "message": m} for c, m in self.failures]}


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def evaluate_policy(
    claims: Claims,
    policy: Policy,
    *,
    public_keys: list[bytes] | None = None,
    report_data: bytes | None = None,
    at: datetime | None = None,
) -> PolicyResult:
    """Judge verified claims. `public_keys` (DER SPKIs) or an explicit `report_data` give the binding.

    `at` defaults to the claims' own verification time, never the wall clock.
    """
    fails: list[tuple[str, str]] = []
    when = at or _parse_time(claims.verified_at)
    if not policy.allows_platform(claims.platform):
        check = "virtual_not_allowed" if claims.platform == "virtual" else "platform_not_allowed"
        fails.append((check, f"platform {claims.platform} is not allowed"))
    if not policy.any_measurement and not any(r.matches(claims) for r in policy.measurements):
        fails.append(
            (
                "measurement_not_allowed",
                f"measurement {claims.measurement} (host data {claims.host_data}) is not allowed",
            )
        )
    if policy.host_data and claims.host_data not in policy.host_data:
        fails.append(("host_data_not_allowed", f"host data {claims.host_data} is not allowed"))
    if claims.debug and (not policy.allow_debug or policy.environment == "production"):
        fails.append(("debug_not_allowed", "the TEE runs in debug mode"))
    minimum = policy.minimum_tcb.get(claims.product, {})
    for comp, floor in minimum.items():
        value = claims.tcb.get(comp)
        if not isinstance(value, int) or value < floor:
            fails.append(("minimum_tcb", f"{claims.product} TCB {comp}={value} is below {floor}"))
    if claims.platform in INTEL:
        if claims.status not in policy.tcb_statuses:
            fails.append(("tcb_status", f"TCB status {claims.status} is not in {list(policy.tcb_statuses)}"))
        trailing = int(claims.details.get("trailing_bytes", 0))
        if trailing and (
            policy.trailing_bytes == "none"
            or (policy.trailing_bytes == "zeros" and not claims.details.get("trailing_bytes_zero", False))
        ):
            fails.append(("trailing_bytes", f"{trailing} unexpected bytes after the quote"))
    if claims.platform == "snp":
        vmpl = claims.details.get("vmpl")
        if vmpl not in policy.snp_vmpls:
            fails.append(("vmpl", f"VMPL {vmpl} is not in {list(policy.snp_vmpls)}"))
        if claims.details.get("policy_bits", {}).get("migrate_ma") and not policy.allow_migration_agent:
            fails.append(("migration_agent", "guest policy allows a migration agent"))
    col = claims.details.get("collateral", {})
    if policy.require_fresh_collateral:
        if col.get("fresh") is False:
            fails.append(("collateral_freshness", "collateral is stale at the verification time"))
        if "expires_at" in col and when > _parse_time(col["expires_at"]):
            fails.append(("collateral_freshness", f"collateral expired at {col['expires_at']}"))
    if policy.collateral_max_age is not None and "oldest_issue_date" in col:
        if when - _parse_time(col["oldest_issue_date"]) > policy.collateral_max_age:
            fails.append(("collateral_freshness", f"collateral issued {col['oldest_issue_date']} is too old"))
    if policy.report_data != "none":
        want = report_data if report_data is not None else (expected_report_data(public_keys) if public_keys else None)
        got = bytes.fromhex(claims.report_data)
        if want is None:
            fails.append(("report_data_binding", "no public keys given to check the report data against"))
        elif policy.report_data == "exact" and got != want.ljust(64, b"\0"):
            fails.append(("report_data_binding", "report data does not equal the expected binding"))
        elif policy.report_data == "prefix" and not got.startswith(want[:32] if report_data is None else want):
            fails.append(("report_data_binding", "report data does not start with the hash of the node's keys"))
    return PolicyResult(allowed=not fails, failures=fails)
