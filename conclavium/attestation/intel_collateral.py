"""Intel DCAP collateral: TCB info, QE identity, CRLs, and the TCB status per Intel's rules.

The signed JSON documents are verified over the exact bytes of the `tcbInfo` / `enclaveIdentity`
value as received (Intel signs the serialized text; re-serialising would change it). Signature,
chain and revocation failures are errors; CRLs are
mandatory: without them revocation cannot be checked, so the collateral is refused. Staleness
(`nextUpdate` before the verification time) is recorded here and refused by the policy, which
production policies cannot waive.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from . import roots
from ._x509 import check_validity, cn, ecdsa_p256_raw_verify, fingerprint, load_certs, verify_signed_by
from .claims import VerificationError, iso
from .intel_quote import QuoteVerification, TdReport

UP_TO_DATE = "UpToDate"
NOT_SUPPORTED = "TCBLevelNotSupported"
COLLATERAL_NAMES = ("tcb_info", "qe_identity", "tcb_signing_chain", "root_ca_crl", "pck_crl")


def normalize(collateral: Mapping[str, bytes]) -> dict[str, bytes]:
    """Accept file names as in the vector folders (`tcb_info.json`, `pck_crl.der`, ...) or bare stems."""
    out: dict[str, bytes] = {}
    for name, data in collateral.items():
        stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
        if stem in COLLATERAL_NAMES:
            out[stem] = data
    return out


def _time(value: str, what: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError) as e:
        raise VerificationError(what, f"bad timestamp {value!r}") from e
    if ts.tzinfo is None:
        raise VerificationError(what, f"timestamp {value!r} has no timezone")
    return ts


def signed_json(raw: bytes, key: str, signer: ec.EllipticCurvePublicKey, check: str) -> dict[str, Any]:
    """Verify `{"<key>": {...}, "signature": "<hex r||s>"}` over the raw bytes of the value."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text)
        m = re.search(r'"' + re.escape(key) + r'"\s*:\s*', text)
        if m is None or not isinstance(doc, dict):
            raise ValueError(f"no {key!r} member")
        value, end = json.JSONDecoder().raw_decode(text, m.end())
        if value != doc.get(key) or not isinstance(value, dict):
            raise ValueError(f"{key!r} member is ambiguous")
        body = text[m.end() : end].encode("utf-8")
        signature = bytes.fromhex(doc["signature"])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise VerificationError(check, f"malformed {key} document: {e}") from e
    if not ecdsa_p256_raw_verify(signer, signature, body):
        raise VerificationError(check, f"{key} signature does not verify with the TCB signing key")
    return value


def _load_crl(data: bytes, check: str) -> x509.CertificateRevocationList:
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError as e:
        raise VerificationError(check, f"cannot parse CRL: {e}") from e


def _check_crl(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, subjects: list[x509.Certificate], what: str
) -> None:
    check = "crls_signed_and_not_revoked"
    if crl.issuer != issuer.subject:
        raise VerificationError(check, f"{what} is issued by {crl.issuer.rfc4514_string()}, not {cn(issuer.subject)}")
    if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
        raise VerificationError(check, f"{what} signature does not verify")
    for cert in subjects:
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise VerificationError(check, f"{cn(cert.subject)} is revoked by the {what}")


def _sgx_components(tcb: dict[str, Any]) -> list[int]:
    if "sgxtcbcomponents" in tcb:
        return [int(c["svn"]) for c in tcb["sgxtcbcomponents"]]
    return [int(tcb[f"sgxtcbcomp{i:02d}svn"]) for i in range(1, 17)]


def _level_summary(level: dict[str, Any] | None) -> dict[str, Any] | None:
    if level is None:
        return None
    return {
        "status": level.get("tcbStatus"),
        "tcbDate": level.get("tcbDate"),
        "advisoryIDs": list(level.get("advisoryIDs", [])),
    }


def _degrade(status: str, other: str) -> str:
    """Combine the platform status with a QE or TDX-module status as Intel's QVL does."""
    if status in (NOT_SUPPORTED, "Revoked"):
        return status
    if other == "Revoked":
        return "Revoked"
    if other == "OutOfDate":
        if status in (UP_TO_DATE, "SWHardeningNeeded"):
            return "OutOfDate"
        if status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    return status


@dataclass
class CollateralResult:
    """TCB status and collateral facts established from verified collateral."""

    status: str
    advisory_ids: list[str]
    platform_tcb: dict[str, Any]
    qe_status: str
    tcb_info: dict[str, Any]
    qe_identity: dict[str, Any]
    freshness: dict[str, Any]
    reasons: list[str] = field(default_factory=list)


def _isvsvn_status(levels: list[dict[str, Any]], isvsvn: int) -> tuple[str, dict[str, Any] | None]:
    for level in levels:
        if int(level["tcb"]["isvsvn"]) <= isvsvn:
            return str(level["tcbStatus"]), level
    return "OutOfDate", None


def verify_collateral(qv: QuoteVerification, collateral: Mapping[str, bytes], *, at: datetime) -> CollateralResult:
    """Verify collateral for a quote that already passed the quote-level checks."""
    col = normalize(collateral)
    for name in COLLATERAL_NAMES:
        if name not in col:
            why = ": revocation cannot be checked" if name.endswith("_crl") else ""
            raise VerificationError("collateral_missing", f"collateral lacks {name}{why}")
    quote, pck = qv.quote, qv.pck
    root = roots.intel_root()
    chain = load_certs(col["tcb_signing_chain"], "tcb_signing_cert_signed_by_root")
    signing = chain[0]
    if any(fingerprint(c) != roots.INTEL_SGX_ROOT_CA_SHA256 for c in chain[1:]) or signing == root:
        raise VerificationError("tcb_signing_cert_signed_by_root", "TCB signing chain must be signer + Intel root")
    verify_signed_by(signing, root, "tcb_signing_cert_signed_by_root")
    check_validity((("TCB signing certificate", signing),), at)
    key = signing.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError("tcb_signing_cert_signed_by_root", "TCB signing key is not EC")

    tcb_info = signed_json(col["tcb_info"], "tcbInfo", key, "tcb_info_signature")
    qe_id = signed_json(col["qe_identity"], "enclaveIdentity", key, "qe_identity_signature")

    freshness: dict[str, Any] = {}
    stale: list[str] = []

    def record(name: str, issued: datetime, next_update: datetime) -> None:
        freshness[name] = {"issue_date": iso(issued), "next_update": iso(next_update)}
        if at > next_update:
            stale.append(f"{name} expired at {iso(next_update)}")
        if at < issued:
            stale.append(f"{name} issued after the verification time ({iso(issued)})")

    crl = _load_crl(col["root_ca_crl"], "crls_signed_and_not_revoked")
    _check_crl(crl, root, [qv.intermediate, signing], "root CA CRL")
    record("root_ca_crl", crl.last_update_utc, crl.next_update_utc or crl.last_update_utc)
    crl = _load_crl(col["pck_crl"], "crls_signed_and_not_revoked")
    _check_crl(crl, qv.intermediate, [qv.leaf], "PCK CRL")
    record("pck_crl", crl.last_update_utc, crl.next_update_utc or crl.last_update_utc)
    try:
        record(
            "tcb_info",
            _time(tcb_info["issueDate"], "tcb_info_signature"),
            _time(tcb_info["nextUpdate"], "tcb_info_signature"),
        )
        record(
            "qe_identity",
            _time(qe_id["issueDate"], "qe_identity_signature"),
            _time(qe_id["nextUpdate"], "qe_identity_signature"),
        )
    except KeyError as e:
        raise VerificationError("collateral_format", f"collateral lacks {e.args[0]}") from e

    want_id = "TDX" if quote.is_tdx else "SGX"
    if tcb_info.get("id", "SGX") != want_id or int(tcb_info.get("version", 0)) not in (2, 3):
        raise VerificationError(
            "tcb_info_id",
            f"TCB info id/version {tcb_info.get('id')}/{tcb_info.get('version')} does not fit a {want_id} quote",
        )
    if (
        str(tcb_info.get("fmspc", "")).lower() != pck.fmspc.hex()
        or str(tcb_info.get("pceId", "")).lower() != pck.pceid.hex()
    ):
        raise VerificationError(
            "tcb_info_matches_pck_fmspc_pceid",
            f"TCB info is for FMSPC {tcb_info.get('fmspc')}, the PCK is {pck.fmspc.hex()}",
        )

    qe = quote.qe_report
    want_qe = "TD_QE" if quote.is_tdx else "QE"
    try:
        ok = (
            qe_id.get("id", "QE") == want_qe
            and bytes.fromhex(qe_id["mrsigner"]) == qe.mrsigner
            and int(qe_id["isvprodid"]) == qe.isvprodid
            and (qe.miscselect & int(qe_id["miscselectMask"], 16)) == int(qe_id["miscselect"], 16)
            and int.from_bytes(qe.attributes, "big") & int(qe_id["attributesMask"], 16) == int(qe_id["attributes"], 16)
        )
        qe_status, qe_level = _isvsvn_status(qe_id["tcbLevels"], qe.isvsvn)
    except (KeyError, ValueError, TypeError) as e:
        raise VerificationError("qe_identity_match", f"malformed QE identity: {e}") from e
    if not ok:
        raise VerificationError("qe_identity_match", f"QE report does not match the {want_qe} identity")

    try:
        levels = tcb_info["tcbLevels"]
        sgx_level = tdx_level = None
        for level in levels:
            tcb = level["tcb"]
            if all(p >= c for p, c in zip(pck.comp_svn, _sgx_components(tcb), strict=True)) and pck.pcesvn >= int(
                tcb["pcesvn"]
            ):
                if sgx_level is None:
                    sgx_level = level
                if not isinstance(quote.body, TdReport):
                    break
                svn = quote.body.tee_tcb_svn
                comps = [int(c["svn"]) for c in tcb["tdxtcbcomponents"]]
                start = 2 if svn[1] > 0 else 0
                if all(svn[i] >= comps[i] for i in range(start, 16)):
                    tdx_level = level
                    break
    except (KeyError, ValueError, TypeError) as e:
        raise VerificationError("tcb_info_format", f"malformed TCB levels: {e}") from e

    chosen = tdx_level if quote.is_tdx else sgx_level
    status = str(chosen["tcbStatus"]) if chosen else NOT_SUPPORTED
    advisories: list[str] = list(chosen.get("advisoryIDs", [])) if chosen else []
    platform_tcb: dict[str, Any] = {"sgx_level": _level_summary(sgx_level)}
    if quote.is_tdx:
        platform_tcb["tdx_level"] = _level_summary(tdx_level)
        platform_tcb["tdx_module"] = _tdx_module(quote.body, tcb_info)  # type: ignore[arg-type]
        module_status = platform_tcb["tdx_module"].get("module_tcb_status")
        if module_status:
            status = _degrade(status, module_status)
    platform_tcb["platform_status"] = str(chosen["tcbStatus"]) if chosen else NOT_SUPPORTED
    status = _degrade(status, qe_status)
    if qe_level:
        advisories += [a for a in qe_level.get("advisoryIDs", []) if a not in advisories]
    platform_tcb["status"] = status
    reasons = [f"collateral stale: {s}" for s in stale]
    nexts = [_time(v["next_update"], "collateral") for v in freshness.values()]
    issues = [_time(v["issue_date"], "collateral") for v in freshness.values()]
    freshness["expires_at"] = iso(min(nexts))
    freshness["oldest_issue_date"] = iso(min(issues))
    freshness["fresh"] = not stale
    return CollateralResult(
        status=status,
        advisory_ids=advisories,
        platform_tcb=platform_tcb,
        qe_status=qe_status,
        tcb_info={
            k: tcb_info.get(k)
            for k in ("id", "version", "issueDate", "nextUpdate", "fmspc", "pceId", "tcbEvaluationDataNumber")
        },
        qe_identity={k: qe_id.get(k) for k in ("id", "version", "issueDate", "nextUpdate", "tcbEvaluationDataNumber")},
        freshness=freshness,
        reasons=reasons,
    )


def _tdx_module(body: TdReport, tcb_info: dict[str, Any]) -> dict[str, Any]:
    """Match the TDX module (MRSIGNERSEAM, SEAM attributes) and rate its TCB (TCB info v3 only)."""
    svn = body.tee_tcb_svn
    out: dict[str, Any] = {"isvsvn": svn[0], "major": svn[1]}
    try:
        if svn[1] > 0 and "tdxModuleIdentities" in tcb_info:
            ident = f"TDX_{svn[1]:02X}"
            matches = [m for m in tcb_info["tdxModuleIdentities"] if m["id"] == ident]
            if not matches:
                raise VerificationError("tdx_module_identity", f"TCB info has no module identity {ident}")
            module = matches[0]
            out["module_identity"] = ident
            out["module_tcb_status"] = _isvsvn_status(module["tcbLevels"], svn[0])[0]
        elif "tdxModule" in tcb_info:
            module = tcb_info["tdxModule"]
        else:
            return out
        signer_ok = bytes.fromhex(module["mrsigner"]) == body.mrsignerseam
        attr_ok = int.from_bytes(body.seam_attributes, "big") & int(module["attributesMask"], 16) == int(
            module["attributes"], 16
        )
    except (KeyError, ValueError, TypeError) as e:
        raise VerificationError("tdx_module_identity", f"malformed TDX module identity: {e}") from e
    if not signer_ok or not attr_ok:
        raise VerificationError("tdx_module_identity", "MRSIGNERSEAM or SEAM attributes do not match the TDX module")
    out["mrsignerseam_matches"] = signer_ok
    out["seam_attributes_match"] = attr_ok
    return out
