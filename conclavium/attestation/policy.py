"""Attestation policy: which verified evidence may join the consortium.

Verification (`verify_evidence`) answers "is this evidence authentic?"; the policy answers "do we
accept this node?". The policy comes from governance as JSON (format in docs/attestation.md): the
node policy set at genesis or by `set_node_policy`, plus the measurements members allowed.

Every measured component has a rule per platform. In `environment: production` a component the
policy leaves unset is refused, not skipped: a policy that forgot the RTMRs admits no TDX node,
rather than any kernel. `virtual`, debug TEEs, unchecked report data and evidence without verified
collateral can never be allowed in production, at load time and again at evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .claims import PLATFORMS, Claims, PolicyError
from .tdx_event_log import COMPONENTS, DIGEST_SIZE

INTEL = ("tdx", "sgx")
TRAILING_MODES = ("none", "zeros", "any")
ANY = "any"
TDX_LISTS = (
    "rtmr0",
    "rtmr1",
    "rtmr2",
    "rtmr3",
    "mrseam",
    "mrconfigid",
    "mrowner",
    "mrownerconfig",
    "xfam",
    "td_attributes",
)
# Components that are often unused (all zeros) and that a production policy may waive explicitly with
# "any"; the others must be listed.
WAIVABLE = ("family_id", "image_id", "mrowner", "mrownerconfig", "xfam", "td_attributes")
SNP_LISTS = ("host_data", "family_id", "image_id")
# tdx.event_log: per RTMR the event digests allowed in it, and per named component its digests.
EVENT_LOG_KEYS = ("rtmr0", "rtmr1", "rtmr2", "rtmr3", *COMPONENTS)
# Statuses that say "not evaluated": never acceptable, collateral is mandatory.
UNEVALUATED = ("Unknown",)


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
class SgxSigner:
    """SGX identity by signer: MRSIGNER + ISV product id, at or above a minimum ISV SVN."""

    mrsigner: str
    isv_prod_id: int
    minimum_isv_svn: int

    def matches(self, body: dict[str, Any]) -> bool:
        return (
            body.get("mrsigner") == self.mrsigner
            and body.get("isvprodid") == self.isv_prod_id
            and int(body.get("isvsvn", -1)) >= self.minimum_isv_svn
        )


# An allow-list: None = unset (refused in production, unchecked in development), "any" = waived
# explicitly, a tuple = the allowed hex values.
AllowList = tuple[str, ...] | str | None


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
    snp_allow_smt: bool = True
    snp_require_single_socket: bool = False
    snp_minimum_committed_tcb: dict[str, dict[str, int]] | None = None
    snp_lists: dict[str, AllowList] = field(default_factory=dict)
    tdx_lists: dict[str, AllowList] = field(default_factory=dict)
    tdx_minimum_tee_tcb_svn: bytes | None = None
    tdx_event_log: dict[str, tuple[str, ...]] | None = None
    sgx_signers: tuple[SgxSigner, ...] = ()
    trailing_bytes: str = "zeros"

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def allows_platform(self, platform: str) -> bool:
        if platform == "virtual" and self.production:
            return False
        return platform in self.platforms


def _hexlist(values: Any, name: str) -> tuple[str, ...]:
    if not isinstance(values, list):
        raise PolicyError("policy_format", f"{name} must be a list")
    out = []
    for v in values:
        try:
            if not isinstance(v, str):
                raise TypeError(v)
            out.append(bytes.fromhex(v).hex())
        except (ValueError, TypeError) as e:
            raise PolicyError("policy_format", f"{name} entries must be hex strings") from e
    return tuple(out)


def _allow_list(value: Any, name: str, production: bool) -> AllowList:
    if value is None:
        return None
    if value == ANY:
        component = name.rsplit(".", 1)[-1]
        if production and component not in WAIVABLE:
            raise PolicyError("policy_format", f"a production policy must list {name}; 'any' is for development")
        return ANY
    return _hexlist(value, name)


def _event_log_rules(value: Any) -> dict[str, tuple[str, ...]] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PolicyError("policy_format", "tdx.event_log must be an object")
    unknown = set(value) - set(EVENT_LOG_KEYS)
    if unknown:
        raise PolicyError("policy_format", f"unknown tdx.event_log keys {sorted(unknown)}")
    out = {}
    for key, digests in value.items():
        listed = _hexlist(digests, f"tdx.event_log.{key}")
        if any(len(d) != 2 * DIGEST_SIZE for d in listed):
            raise PolicyError("policy_format", f"tdx.event_log.{key} entries are SHA-384 digests (48 bytes)")
        out[key] = listed
    return out


def _tcb_floors(value: Any, name: str) -> dict[str, dict[str, int]]:
    if not isinstance(value, dict):
        raise PolicyError("policy_format", f"{name} must map products to {{component: minimum}}")
    out: dict[str, dict[str, int]] = {}
    for product, comps in value.items():
        if not isinstance(comps, dict) or not all(type(v) is int and v >= 0 for v in comps.values()):
            raise PolicyError("policy_format", f"{name}.{product} must map components to non-negative integers")
        out[str(product)] = dict(comps)
    return out


def _section(doc: dict[str, Any], name: str, known: set[str]) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise PolicyError("policy_format", f"{name} must be an object")
    unknown = set(value) - known
    if unknown:
        raise PolicyError("policy_format", f"unknown {name} keys {sorted(unknown)}")
    return value


def _flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError("policy_format", f"{name} must be true or false")
    return value


POLICY_KEYS = frozenset(
    {
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
        "tdx",
        "sgx",
        "trailing_bytes",
    }
)


def load_policy(source: dict[str, Any] | bytes | str) -> Policy:
    """Parse and validate a policy document (dict or JSON text)."""
    try:
        doc = json.loads(source) if isinstance(source, bytes | str) else source
    except ValueError as e:
        raise PolicyError("policy_format", f"policy is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise PolicyError("policy_format", "policy must be a JSON object")
    unknown = set(doc) - POLICY_KEYS
    if unknown:
        raise PolicyError("policy_format", f"unknown policy keys {sorted(unknown)}")
    env = doc.get("environment", "production")
    if env not in ("production", "development"):
        raise PolicyError("policy_format", "environment must be 'production' or 'development'")
    production = env == "production"
    raw_platforms = doc.get("platforms", ["snp", "tdx", "sgx"])
    if not isinstance(raw_platforms, list | tuple) or any(p not in PLATFORMS for p in raw_platforms):
        raise PolicyError("policy_format", f"platforms must be a list among {PLATFORMS}")
    platforms = tuple(raw_platforms)
    if production and "virtual" in platforms:
        raise PolicyError("virtual_not_allowed", "a production policy cannot allow virtual evidence")
    allow_debug = _flag(doc.get("allow_debug", False), "allow_debug")
    if production and allow_debug:
        raise PolicyError("debug_not_allowed", "a production policy cannot allow debug TEEs")
    rules: list[MeasurementRule] = []
    raw_measurements = doc.get("measurements", [])
    any_measurement = raw_measurements == ANY
    if any_measurement:
        if production:
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
    minimum = _tcb_floors(doc.get("minimum_tcb", {}), "minimum_tcb")
    collateral = _section(doc, "collateral", {"require_fresh", "max_age_seconds"})
    require_fresh = _flag(collateral.get("require_fresh", True), "collateral.require_fresh")
    if production and not require_fresh:
        raise PolicyError("policy_format", "a production policy must require fresh collateral")
    max_age = collateral.get("max_age_seconds")
    if max_age is not None and (type(max_age) is not int or max_age <= 0):
        raise PolicyError("policy_format", "collateral.max_age_seconds must be a positive integer")
    statuses = doc.get("tcb_statuses", ["UpToDate"])
    if not isinstance(statuses, list | tuple) or not all(isinstance(s, str) for s in statuses):
        raise PolicyError("policy_format", "tcb_statuses must be a list of Intel TCB status names")
    if any(s in UNEVALUATED for s in statuses):
        raise PolicyError(
            "policy_format", "tcb_statuses cannot include 'Unknown': collateral is mandatory for TDX and SGX"
        )
    report_mode = doc.get("report_data", "prefix")
    if report_mode not in ("prefix", "exact", "none"):
        raise PolicyError("policy_format", "report_data must be 'prefix', 'exact' or 'none'")
    if production and report_mode == "none":
        raise PolicyError("policy_format", "a production policy must bind the node's keys in report_data")
    trailing = doc.get("trailing_bytes", "zeros")
    if trailing not in TRAILING_MODES:
        raise PolicyError("policy_format", f"trailing_bytes must be one of {TRAILING_MODES}")

    snp = _section(
        doc,
        "snp",
        {"vmpl", "allow_migration_agent", "allow_smt", "require_single_socket", "minimum_committed_tcb", *SNP_LISTS},
    )
    vmpls = snp.get("vmpl", [0])
    if not isinstance(vmpls, list) or not all(type(v) is int and 0 <= v <= 3 for v in vmpls):
        raise PolicyError("policy_format", "snp.vmpl must be a list of integers 0-3")
    committed = snp.get("minimum_committed_tcb")
    tdx = _section(doc, "tdx", {*TDX_LISTS, "minimum_tee_tcb_svn", "event_log"})
    min_svn = tdx.get("minimum_tee_tcb_svn")
    min_svn_raw: bytes | None = None
    if min_svn is not None:
        try:
            min_svn_raw = bytes.fromhex(min_svn) if isinstance(min_svn, str) else b""
        except ValueError:
            min_svn_raw = b""
        if len(min_svn_raw) != 16:
            raise PolicyError("policy_format", "tdx.minimum_tee_tcb_svn must be 16 bytes of hex")
    sgx = _section(doc, "sgx", {"signers"})
    signers: list[SgxSigner] = []
    raw_signers = sgx.get("signers", [])
    if not isinstance(raw_signers, list):
        raise PolicyError("policy_format", "sgx.signers must be a list")
    for s in raw_signers:
        if not isinstance(s, dict) or set(s) != {"mrsigner", "isv_prod_id", "minimum_isv_svn"}:
            raise PolicyError("policy_format", "each sgx.signers entry is {mrsigner, isv_prod_id, minimum_isv_svn}")
        if not all(type(s[k]) is int and 0 <= s[k] <= 0xFFFF for k in ("isv_prod_id", "minimum_isv_svn")):
            raise PolicyError("policy_format", "isv_prod_id and minimum_isv_svn are integers 0-65535")
        signers.append(SgxSigner(_hexlist([s["mrsigner"]], "mrsigner")[0], s["isv_prod_id"], s["minimum_isv_svn"]))
    return Policy(
        environment=env,
        platforms=platforms,
        measurements=tuple(rules),
        any_measurement=any_measurement,
        host_data=_hexlist(doc.get("host_data", []), "host_data"),
        minimum_tcb=minimum,
        allow_debug=allow_debug,
        tcb_statuses=tuple(statuses),
        require_fresh_collateral=require_fresh,
        collateral_max_age=timedelta(seconds=max_age) if max_age is not None else None,
        report_data=report_mode,
        snp_vmpls=tuple(vmpls),
        allow_migration_agent=_flag(snp.get("allow_migration_agent", False), "snp.allow_migration_agent"),
        snp_allow_smt=_flag(snp.get("allow_smt", True), "snp.allow_smt"),
        snp_require_single_socket=_flag(snp.get("require_single_socket", False), "snp.require_single_socket"),
        snp_minimum_committed_tcb=_tcb_floors(committed, "snp.minimum_committed_tcb")
        if committed is not None
        else None,
        snp_lists={k: _allow_list(snp.get(k), f"snp.{k}", production) for k in SNP_LISTS},
        tdx_lists={k: _allow_list(tdx.get(k), f"tdx.{k}", production) for k in TDX_LISTS},
        tdx_minimum_tee_tcb_svn=min_svn_raw,
        tdx_event_log=_event_log_rules(tdx.get("event_log")),
        sgx_signers=tuple(signers),
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


def _check_list(
    fails: list[tuple[str, str]], policy: Policy, name: str, rule: AllowList, value: str | None, label: str
) -> None:
    """One allow-listed component: unset is refused in production, skipped in development."""
    if rule is None:
        if policy.production:
            fails.append((name, f"the policy lists no {label} value; a production policy refuses what it leaves unset"))
        return
    if rule == ANY:
        return
    if value not in rule:
        fails.append((name, f"{label} {value} is not allowed"))


def _check_floor(
    fails: list[tuple[str, str]], check: str, what: str, values: dict[str, Any], floor: dict[str, int]
) -> None:
    for comp, minimum in sorted(floor.items()):
        value = values.get(comp)
        if not isinstance(value, int) or value < minimum:
            fails.append((check, f"{what} {comp}={value} is below {minimum}"))


def _snp(claims: Claims, policy: Policy, fails: list[tuple[str, str]]) -> None:
    d = claims.details
    if policy.production and "amd_crl" not in d.get("collateral", {}):
        fails.append(
            (
                "collateral_missing",
                "no AMD CRL (KDS crl) was checked, so revocation of the ASK/ASVK is unknown; production refuses it",
            )
        )
    vmpl = d.get("vmpl")
    if vmpl not in policy.snp_vmpls:
        fails.append(("vmpl", f"VMPL {vmpl} is not in {list(policy.snp_vmpls)}"))
    bits = d.get("policy_bits", {})
    if bits.get("migrate_ma") and not policy.allow_migration_agent:
        fails.append(("migration_agent", "guest policy allows a migration agent"))
    if bits.get("smt") and not policy.snp_allow_smt:
        fails.append(("guest_policy", "guest policy allows SMT, which this policy refuses"))
    if policy.snp_require_single_socket and not bits.get("single_socket"):
        fails.append(("guest_policy", "guest policy does not require a single socket"))
    reported_floor = policy.minimum_tcb.get(claims.product)
    if reported_floor is None and policy.production:
        fails.append(("minimum_tcb", f"the policy sets no minimum TCB for {claims.product}; production refuses it"))
    committed = policy.snp_minimum_committed_tcb
    committed_floor = committed.get(claims.product) if committed is not None else reported_floor
    if committed_floor is not None:
        _check_floor(
            fails, "committed_tcb", f"{claims.product} COMMITTED_TCB", d.get("committed_tcb", {}), committed_floor
        )
    pinned_host = bool(policy.host_data) or any(
        r.host_data is not None and r.matches(claims) for r in policy.measurements
    )
    host_rule = policy.snp_lists.get("host_data")
    if not (pinned_host and host_rule is None):
        _check_list(fails, policy, "host_data_not_allowed", host_rule, claims.host_data, "HOST_DATA")
    _check_list(fails, policy, "family_id", policy.snp_lists.get("family_id"), d.get("family_id"), "FAMILY_ID")
    _check_list(fails, policy, "image_id", policy.snp_lists.get("image_id"), d.get("image_id"), "IMAGE_ID")


def _event_log(claims: Claims, rules: dict[str, tuple[str, ...]], fails: list[tuple[str, str]]) -> set[str]:
    """Judge the replayed event log; returns the RTMRs its rules cover (instead of raw allow-lists)."""
    log = claims.details.get("event_log")
    if not isinstance(log, dict):
        fails.append(("event_log_missing", "the policy judges the TDX event log, and the evidence carries none"))
        return {k for k in rules if k.startswith("rtmr")}
    for rtmr in (k for k in rules if k.startswith("rtmr")):
        extra = [d for d in log.get(rtmr, []) if d not in rules[rtmr]]
        if extra:
            fails.append(
                (rtmr, f"{rtmr.upper()} has {len(extra)} event(s) the policy does not allow, first {extra[0]}")
            )
    found = log.get("components", {})
    for comp in COMPONENTS:
        if comp not in rules:
            continue
        got = found.get(comp, [])
        if not got:
            fails.append((f"event_log_{comp}", f"the event log measures no {comp}"))
        elif any(d not in rules[comp] for d in got):
            fails.append((f"event_log_{comp}", f"{comp} {got[-1]} is not allowed"))
    return {k for k in rules if k.startswith("rtmr")}


def _tdx(claims: Claims, policy: Policy, fails: list[tuple[str, str]]) -> None:
    body = claims.details.get("body", {})
    by_log = _event_log(claims, policy.tdx_event_log, fails) if policy.tdx_event_log is not None else set()
    for name in TDX_LISTS:
        rule = policy.tdx_lists.get(name)
        if rule is None and name in by_log:
            continue  # judged through the replayed event log
        if (
            name == "mrconfigid"
            and rule is None
            and (policy.host_data or any(r.host_data is not None and r.matches(claims) for r in policy.measurements))
        ):
            continue  # pinned through host_data, which is MRCONFIGID for TDX
        _check_list(fails, policy, name, rule, body.get(name), name.upper())
    floor = policy.tdx_minimum_tee_tcb_svn
    if floor is None:
        if policy.production:
            fails.append(("tee_tcb_svn", "the policy sets no minimum TEE_TCB_SVN; production refuses it"))
        return
    svn = bytes.fromhex(body.get("tee_tcb_svn", ""))
    if len(svn) != 16 or any(s < f for s, f in zip(svn, floor, strict=True)):
        fails.append(("tee_tcb_svn", f"TEE_TCB_SVN {svn.hex()} is below {floor.hex()} in some component"))


def _identity(claims: Claims, policy: Policy) -> bool:
    if policy.any_measurement or any(r.matches(claims) for r in policy.measurements):
        return True
    body = claims.details.get("body", {})
    return claims.platform == "sgx" and any(s.matches(body) for s in policy.sgx_signers)


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
    if not _identity(claims, policy):
        what = "MRENCLAVE or signer" if claims.platform == "sgx" else "measurement"
        fails.append(
            (
                "measurement_not_allowed",
                f"{what} {claims.measurement} (host data {claims.host_data}) is not allowed",
            )
        )
    if policy.host_data and claims.host_data not in policy.host_data:
        fails.append(("host_data_not_allowed", f"host data {claims.host_data} is not allowed"))
    if claims.debug and (not policy.allow_debug or policy.production):
        fails.append(("debug_not_allowed", "the TEE runs in debug mode"))
    _check_floor(fails, "minimum_tcb", f"{claims.product} TCB", claims.tcb, policy.minimum_tcb.get(claims.product, {}))
    if claims.platform in INTEL:
        if claims.status in UNEVALUATED:
            fails.append(("collateral_missing", "no verified collateral: the TCB status was not evaluated"))
        elif claims.status not in policy.tcb_statuses:
            fails.append(("tcb_status", f"TCB status {claims.status} is not in {list(policy.tcb_statuses)}"))
        trailing = int(claims.details.get("trailing_bytes", 0))
        if trailing and (
            policy.trailing_bytes == "none"
            or (policy.trailing_bytes == "zeros" and not claims.details.get("trailing_bytes_zero", False))
        ):
            fails.append(("trailing_bytes", f"{trailing} unexpected bytes after the quote"))
    if claims.platform == "snp":
        _snp(claims, policy, fails)
    if claims.platform == "tdx":
        _tdx(claims, policy, fails)
    col = claims.details.get("collateral", {})
    if policy.require_fresh_collateral or policy.production:
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
