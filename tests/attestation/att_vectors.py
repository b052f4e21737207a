"""Shared vector loading for attestation tests (imported by the test modules)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from conclavium.attestation.policy import TDX_LISTS

VECTORS = Path(os.environ.get("CONCLAVIUM_VECTORS", Path(__file__).resolve().parents[3] / "shared/attestation/vectors"))
if not VECTORS.is_dir():
    VECTORS = Path("/work/shared/attestation/vectors")
VENV_BIN = Path(sys.executable).parent
SIGNING_CERT_FROM = datetime(2025, 5, 6, tzinfo=UTC)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class SnpVector:
    name: str
    report: bytes
    certs: dict[str, bytes]
    expected: dict
    at: datetime = datetime(2025, 6, 1, tzinfo=UTC)


@dataclass
class IntelVector:
    name: str
    platform: str
    quote: bytes
    expected: dict
    collateral: dict[str, bytes] = field(default_factory=dict)
    at: datetime = datetime(2025, 6, 1, tzinfo=UTC)


def _files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file() and f.name.endswith(suffixes)}


def snp_vectors() -> list[SnpVector]:
    out = []
    for name in (
        "milan-v2-gosevguest",
        "milan-v2-trustee",
        "milan-v2-virtee",
        "milan-v3-vlek-trustee",
        "genoa-v3-azure-hcl-trustee",
    ):
        folder = VECTORS / "snp" / name
        out.append(
            SnpVector(
                name,
                (folder / "report.bin").read_bytes(),
                _files(folder, (".pem", ".der")),
                json.loads((folder / "expected.json").read_text()),
            )
        )
    return out


def _intel_time(expected: dict) -> datetime:
    """One hour after the newest collateral document; never before the bundled TCB signing cert."""
    issued = [ts(expected[k]["issueDate"]) for k in ("tcb_info", "qe_identity") if k in expected]
    at = max(issued) + timedelta(hours=1) if issued else datetime(2025, 6, 1, tzinfo=UTC)
    return max(at, SIGNING_CERT_FROM + timedelta(days=26))


def intel_vectors() -> list[IntelVector]:
    out = []
    for plat, name in (
        ("sgx", "v3-dcapqvl"),
        ("sgx", "v3-occlum-trustee"),
        ("tdx", "v4-dcapqvl"),
        ("tdx", "v5-tdx15-dcapqvl-outdated"),
        ("tdx", "v4-gotdxguest-spr"),
        ("tdx", "v5-tdx15-gotdxguest"),
        ("tdx", "v4-trustee-q4"),
        ("tdx", "v4-module03-trustee-q6"),
    ):
        folder = VECTORS / plat / name
        expected = json.loads((folder / "expected.json").read_text())
        col = folder / "collateral"
        collateral = _files(col, (".json", ".pem", ".der")) if col.is_dir() else {}
        collateral.pop("source_collateral.json", None)
        out.append(
            IntelVector(
                f"{plat}/{name}", plat, (folder / "quote.bin").read_bytes(), expected, collateral, _intel_time(expected)
            )
        )
    folder = VECTORS / "tdx" / "quote-only-trustee"
    expected_all = json.loads((folder / "expected.json").read_text())
    for fname in ("tdx_quote_5.bin", "azure_td_quote.bin"):
        out.append(
            IntelVector(
                f"tdx/quote-only-trustee/{fname}",
                "tdx",
                (folder / fname).read_bytes(),
                expected_all[fname],
                {},
                datetime(2025, 6, 1, tzinfo=UTC),
            )
        )
    return out


def accepting(claims: Any) -> dict:
    """A production policy document that pins every component to what `claims` show (accepts them)."""
    doc: dict[str, Any] = {"measurements": [{"platform": claims.platform, "measurement": claims.measurement}]}
    d = claims.details
    if claims.platform == "snp":
        doc["minimum_tcb"] = {claims.product: dict(claims.tcb)}
        doc["snp"] = {
            "host_data": [claims.host_data],
            "family_id": [d["family_id"]],
            "image_id": [d["image_id"]],
            "minimum_committed_tcb": {claims.product: dict(d["committed_tcb"])},
        }
    if claims.platform == "tdx":
        body = d["body"]
        doc["tdx"] = {name: [body[name]] for name in TDX_LISTS}
        doc["tdx"]["minimum_tee_tcb_svn"] = body["tee_tcb_svn"]
    return doc
