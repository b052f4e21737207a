"""`virtual` evidence for development: explicit, unsigned JSON that proves nothing.

It exists so the whole join path can run without TEE hardware. It is never inferred from missing
fields: the JSON must say `"platform": "virtual"`, and `verify_evidence` refuses it unless the policy
allows it, which a production policy cannot (see `policy.py`).
"""

from __future__ import annotations

import json
from datetime import datetime

from .claims import Claims, VerificationError, iso, require_aware

FIELDS = ("platform", "measurement", "host_data", "report_data", "debug")


def make_virtual_evidence(measurement: bytes, host_data: bytes, report_data: bytes, debug: bool = False) -> bytes:
    """Serialize virtual evidence (canonical JSON, hex lower-case). `debug` emulates a debug build,
    which policies refuse as they refuse a debug guest, TD or enclave."""
    if len(report_data) > 64:
        raise ValueError("report_data is at most 64 bytes")
    doc: dict[str, object] = {
        "platform": "virtual",
        "measurement": measurement.hex(),
        "host_data": host_data.hex(),
        "report_data": report_data.ljust(64, b"\0").hex(),
    }
    if debug:
        doc["debug"] = True
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _hex(doc: dict[str, object], name: str, max_len: int) -> bytes:
    value = doc.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError("not a string")
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise VerificationError("virtual_format", f"{name} must be a hex string") from e
    if len(raw) > max_len:
        raise VerificationError("virtual_format", f"{name} is longer than {max_len} bytes")
    return raw


def parse_virtual(evidence: bytes, *, at: datetime) -> Claims:
    """Turn virtual evidence into claims with status `Insecure`; no check is cryptographic."""
    require_aware(at)
    try:
        doc = json.loads(evidence)
    except (ValueError, UnicodeDecodeError) as e:
        raise VerificationError("virtual_format", f"virtual evidence is not JSON: {e}") from e
    if not isinstance(doc, dict) or doc.get("platform") != "virtual":
        raise VerificationError("virtual_format", 'virtual evidence must say "platform": "virtual"')
    unknown = set(doc) - set(FIELDS)
    if unknown:
        raise VerificationError("virtual_format", f"unknown fields {sorted(unknown)}")
    measurement = _hex(doc, "measurement", 64)
    host_data = _hex(doc, "host_data", 64)
    report_data = _hex(doc, "report_data", 64).ljust(64, b"\0")
    debug = doc.get("debug", False)
    if not isinstance(debug, bool):
        raise VerificationError("virtual_format", "debug must be true or false")
    return Claims(
        platform="virtual",
        measurement=measurement.hex(),
        host_data=host_data.hex(),
        report_data=report_data.hex(),
        tcb={},
        debug=debug,
        chip_id="",
        status="Insecure",
        reasons=["virtual evidence: unsigned, proves nothing about the node"],
        product="virtual",
        verified_at=iso(at),
    )
