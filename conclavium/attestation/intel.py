"""Claims from Intel TDX and SGX DCAP quotes: quote-level checks plus optional collateral."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .claims import Claims, VerificationError, iso, require_aware
from .intel_collateral import verify_collateral
from .intel_quote import TdReport, body_details, verify_quote
from .tdx_event_log import check_against_quote


def verify_intel(
    platform: str,
    evidence: bytes,
    *,
    collateral: Mapping[str, bytes] | None = None,
    event_log: bytes | None = None,
    at: datetime,
) -> Claims:
    """Verify a DCAP quote for `platform` ('tdx' or 'sgx') at time `at`.

    Without collateral the TCB status is `Unknown`; with it, the collateral's signatures, CRLs and
    FMSPC are checked and the status follows Intel's rules. A TDX `event_log` (CCEL) must replay to
    the quote's RTMR0-3; its events and named components go into `details.event_log`.
    """
    require_aware(at)
    qv = verify_quote(evidence, at=at)
    quote, pck = qv.quote, qv.pck
    actual = "tdx" if quote.is_tdx else "sgx"
    if platform != actual:
        raise VerificationError("platform_mismatch", f"evidence is a {actual} quote, not {platform}")
    body = quote.body
    tcb: dict[str, Any] = {
        "fmspc": pck.fmspc.hex(),
        "pceid": pck.pceid.hex(),
        "pcesvn": pck.pcesvn,
        "cpusvn": pck.cpusvn.hex(),
        **{f"sgx_comp{i + 1:02d}": v for i, v in enumerate(pck.comp_svn)},
        "qe_isvsvn": quote.qe_report.isvsvn,
    }
    if isinstance(body, TdReport):
        tcb.update(
            tee_tcb_svn=body.tee_tcb_svn.hex(), tdx_module_svn=body.tee_tcb_svn[0], tdx_module_major=body.tee_tcb_svn[1]
        )
        measurement, host_data = body.mrtd, body.mrconfigid
    else:
        tcb.update(isvsvn=body.isvsvn, isvprodid=body.isvprodid)
        measurement, host_data = body.mrenclave, body.config_id
    reasons: list[str] = []
    if body.debug:
        reasons.append("debug: " + ("TD_ATTRIBUTES.DEBUG is set" if quote.is_tdx else "enclave DEBUG attribute is set"))
    if quote.trailing:
        kind = "zero" if not any(quote.trailing) else "non-zero"
        reasons.append(f"trailing_bytes: {len(quote.trailing)} {kind} bytes after the signature data")
    details: dict[str, Any] = {
        "quote_version": quote.version,
        "tee_type": f"{quote.tee_type:#x}",
        "body_type": quote.body_type,
        "body": body_details(quote),
        "trailing_bytes": len(quote.trailing),
        "trailing_bytes_zero": not any(quote.trailing),
        "pck": {
            "issuer": qv.intermediate.subject.rfc4514_string(),
            "not_after": iso(qv.leaf.not_valid_after_utc),
            "sgx_type": pck.sgx_type,
            "platform_instance_id": pck.platform_instance_id.hex(),
        },
        "qe_report": {
            "mrenclave": quote.qe_report.mrenclave.hex(),
            "mrsigner": quote.qe_report.mrsigner.hex(),
            "isvprodid": quote.qe_report.isvprodid,
            "isvsvn": quote.qe_report.isvsvn,
        },
        "collateral": {"expires_at": iso(min(c.not_valid_after_utc for c in (qv.leaf, qv.intermediate)))},
    }
    if event_log is not None:
        if not isinstance(body, TdReport):
            raise VerificationError("event_log_platform", "an event log replays TDX RTMRs; this is an SGX quote")
        details["event_log"] = check_against_quote(event_log, [body.rtmr(i) for i in range(4)])
    status = "Unknown"
    if collateral:
        result = verify_collateral(qv, collateral, at=at)
        status = result.status
        reasons += result.reasons
        if result.advisory_ids:
            reasons.append("advisories: " + ",".join(result.advisory_ids))
        details.update(
            advisory_ids=result.advisory_ids,
            platform_tcb=result.platform_tcb,
            qe_status=result.qe_status,
            tcb_info=result.tcb_info,
            qe_identity=result.qe_identity,
        )
        details["collateral"] = {
            **result.freshness,
            "expires_at": min(result.freshness["expires_at"], details["collateral"]["expires_at"]),
        }
    else:
        reasons.append("no collateral: TCB status not evaluated")
    return Claims(
        platform=actual,
        measurement=measurement.hex(),
        host_data=host_data.hex(),
        report_data=body.report_data.hex(),
        tcb=tcb,
        debug=body.debug,
        chip_id=pck.ppid.hex(),
        status=status,
        reasons=reasons,
        product=actual.upper(),
        verified_at=iso(at),
        details=details,
    )
