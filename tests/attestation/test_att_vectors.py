"""Every shared vector verifies with the claims in its expected.json; tampering is rejected by name."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime

import pytest
from att_vectors import VECTORS, IntelVector, SnpVector, intel_vectors, snp_vectors
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from conclavium.attestation import VerificationError, verify_evidence
from conclavium.attestation._x509 import load_certs
from conclavium.attestation.snp import verify_amd_chain

SNP = snp_vectors()
INTEL = intel_vectors()
STATUS_NAMES = {"TCB level not supported": "TCBLevelNotSupported"}


def flip(data: bytes, offset: int) -> bytes:
    return data[:offset] + bytes([data[offset] ^ 0x01]) + data[offset + 1 :]


def snp_verify(v: SnpVector, report: bytes | None = None, certs: dict[str, bytes] | None = None, at=None):
    return verify_evidence(
        "snp",
        report if report is not None else v.report,
        certs=list((certs if certs is not None else v.certs).values()),
        at=at or v.at,
    )


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.name)
def test_snp_vector_claims(v: SnpVector) -> None:
    claims = snp_verify(v)
    rep = v.expected["report"]
    assert claims.platform == "snp"
    assert claims.product == v.expected["product"]
    assert claims.measurement == rep["measurement"]
    assert claims.report_data == rep["report_data"]
    assert claims.host_data == rep["host_data"]
    assert claims.chip_id == rep["chip_id"]
    assert claims.tcb == rep["reported_tcb"]
    assert claims.debug == bool(rep["policy_decoded"]["debug"])
    assert claims.details["vmpl"] == rep["vmpl"]
    assert claims.details["version"] == rep["version"]
    assert claims.details["policy"] == rep["policy"]
    assert claims.details["current_tcb"] == rep["current_tcb"]
    assert claims.details["signing_key"] == ("VLEK" if rep["signing_key"] else "VCEK")
    assert claims.details["leaf"]["product_name"] == v.expected["leaf"]["product_name"]
    assert claims.status == "Unknown"


def test_snp_debug_guest_is_reported() -> None:
    claims = snp_verify(next(v for v in SNP if v.name == "milan-v2-gosevguest"))
    assert claims.debug is True
    assert any(r.startswith("debug") for r in claims.reasons)


def test_snp_expired_vlek_rejected() -> None:
    v = next(v for v in SNP if v.name == "milan-v3-vlek-trustee")
    with pytest.raises(VerificationError) as e:
        snp_verify(v, at=datetime(2025, 12, 11, tzinfo=UTC))
    assert e.value.check == "certificate_validity" and "VLEK" in e.value.message


def test_snp_azure_hcl_report_binds_runtime_data() -> None:
    v = next(v for v in SNP if v.name.startswith("genoa"))
    hcl = (VECTORS / "snp" / v.name / "hcl_report.bin").read_bytes()
    claims = snp_verify(v, report=hcl)
    assert claims.measurement == v.expected["report"]["measurement"]
    assert '"keys"' in claims.details["hcl_runtime_data"]
    with pytest.raises(VerificationError) as e:
        snp_verify(v, report=flip(hcl, 0x4D4 + 10))
    assert e.value.check == "azure_hcl_runtime_data_sha256_in_report_data"


def test_turin_chain_verifies() -> None:
    folder = VECTORS / "snp" / "turin-vcek-chain-virtee"
    certs = [(folder / n).read_bytes() for n in ("vcek.der", "ask.pem", "ark.pem")]
    chain = verify_amd_chain(certs, at=datetime(2025, 6, 1, tzinfo=UTC))
    assert chain.product == "Turin" and chain.kind == "vcek"


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.name)
@pytest.mark.parametrize(
    ("offset", "check"),
    [
        (0x90, "report_signature"),
        (0x50, "report_signature"),
        (0x2A0, "report_signature"),
        (0x2E8 + 5, "report_signature"),
    ],
    ids=["measurement", "report_data", "signature_r", "signature_s"],
)
def test_snp_flipped_report_byte_rejected(v: SnpVector, offset: int, check: str) -> None:
    with pytest.raises(VerificationError) as e:
        snp_verify(v, report=flip(v.report, offset))
    assert e.value.check == check


def _leaf_name(v: SnpVector) -> str:
    return next(n for n in v.certs if n.startswith(("vcek", "vlek")))


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.name)
def test_snp_flipped_certificate_rejected(v: SnpVector) -> None:
    name = _leaf_name(v)
    certs = dict(v.certs)
    der = load_certs(certs[name])[0].public_bytes(Encoding.DER)
    certs[name] = flip(der, len(der) - 20)  # inside the RSA-PSS signature of the leaf
    with pytest.raises(VerificationError) as e:
        snp_verify(v, certs=certs)
    assert e.value.check == "leaf_signed_by_ask"
    ask = dict(v.certs)
    inter = next(n for n in ask if n.startswith(("ask", "asvk")))
    pem = ask[inter]
    lines = pem.split(b"\n")
    idx = len(lines) - 3  # a line in the signature of the ASK
    lines[idx] = (b"B" if lines[idx][:1] != b"B" else b"C") + lines[idx][1:]
    ask[inter] = b"\n".join(lines)
    with pytest.raises(VerificationError) as e:
        snp_verify(v, certs=ask)
    assert e.value.check in ("ask_signed_by_ark", "certificate_format")


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.name)
def test_snp_wrong_product_chain_rejected(v: SnpVector) -> None:
    other = "genoa" if v.expected["product"] == "Milan" else "milan"
    donor = next(x for x in SNP if x.name.startswith(other) and "vlek" not in x.name)
    certs = {
        _leaf_name(v): v.certs[_leaf_name(v)],
        "ark.pem": donor.certs["ark.pem"],
        "ask.pem": donor.certs["ask.pem"],
    }
    with pytest.raises(VerificationError) as e:
        snp_verify(v, certs=certs)
    assert e.value.check == "ark_pinned"
    certs.pop("ark.pem")
    with pytest.raises(VerificationError) as e:
        snp_verify(v, certs=certs)
    assert e.value.check == "ask_signed_by_ark"


def test_snp_leaf_from_another_chip_rejected() -> None:
    a, b = SNP[1], SNP[2]
    with pytest.raises(VerificationError) as e:
        snp_verify(a, certs={"vcek.der": b.certs["vcek.der"]})
    assert e.value.check == "report_signature"


def test_snp_length_and_missing_leaf() -> None:
    v = SNP[0]
    with pytest.raises(VerificationError) as e:
        snp_verify(v, report=v.report + b"\0")
    assert e.value.check == "report_length"
    with pytest.raises(VerificationError) as e:
        snp_verify(v, certs={})
    assert e.value.check == "leaf_certificate"


def test_cryptography_still_loads_serial_zero_amd_certs() -> None:
    """AMD VCEK/VLEK have serial 0; if `cryptography` starts refusing them this must fail loudly."""
    der = SNP[0].certs["vcek.der"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cert = x509.load_der_x509_certificate(der)
        assert cert.serial_number == 0
    assert any(issubclass(w.category, CryptographyDeprecationWarning) for w in caught)


def has_crls(v: IntelVector) -> bool:
    return {"root_ca_crl.der", "pck_crl.der"} <= set(v.collateral)


def intel_verify(v: IntelVector, quote: bytes | None = None, collateral=None, at=None):
    return verify_evidence(
        v.platform,
        quote if quote is not None else v.quote,
        collateral=v.collateral if collateral is None else collateral,
        at=at or v.at,
    )


@pytest.mark.parametrize("v", INTEL, ids=lambda v: v.name)
def test_intel_vector_claims(v: IntelVector) -> None:
    if v.collateral and not has_crls(v):
        # Collateral without CRLs cannot prove the PCK unrevoked: refused, quote-level claims only.
        with pytest.raises(VerificationError) as e:
            intel_verify(v)
        assert e.value.check == "collateral_missing"
        claims = intel_verify(v, collateral={})
    else:
        claims = intel_verify(v)
    exp = v.expected
    body = exp["body"]
    assert claims.platform == v.platform
    assert claims.report_data == body["report_data"]
    assert claims.debug == body["debug"]
    if v.platform == "tdx":
        assert claims.measurement == body["mrtd"]
        assert claims.host_data == body["mrconfigid"]
    else:
        assert claims.measurement == body["mrenclave"]
        assert claims.host_data == body["config_id"]
    for key, value in body.items():
        if key != "debug" and key != "report_data":
            assert claims.details["body"][key] == value, key
    assert claims.details["quote_version"] == exp["header"]["version"]
    assert claims.details["trailing_bytes"] == exp["trailing_bytes_after_signature"]
    assert claims.tcb["fmspc"] == exp["pck"]["fmspc"]
    assert claims.tcb["pcesvn"] == exp["pck"]["pcesvn"]
    assert [claims.tcb[f"sgx_comp{i:02d}"] for i in range(1, 17)] == exp["pck"]["sgx_tcb_comp_svn"]
    assert claims.chip_id == exp["pck"]["ppid"]
    assert claims.details["qe_report"]["isvsvn"] == exp["qe_report"]["isvsvn"]
    if "platform_tcb" in exp and has_crls(v):
        want = exp["platform_tcb"]["status"]
        assert claims.status == STATUS_NAMES.get(want, want)
        assert claims.details["tcb_info"]["issueDate"] == exp["tcb_info"]["issueDate"]
        module = exp["platform_tcb"].get("tdx_module", {})
        if "module_identity" in module:
            assert claims.details["platform_tcb"]["tdx_module"]["module_identity"] == module["module_identity"]
            assert claims.details["platform_tcb"]["tdx_module"]["module_tcb_status"] == module["module_tcb_status"]
    else:
        assert claims.status == "Unknown"


def test_sgx_advisories_reported() -> None:
    claims = intel_verify(next(v for v in INTEL if v.name == "sgx/v3-dcapqvl"))
    assert claims.details["advisory_ids"] == ["INTEL-SA-00289", "INTEL-SA-00615"]


def test_intel_trailing_bytes_reported() -> None:
    spr = intel_verify(next(v for v in INTEL if v.name == "tdx/v4-gotdxguest-spr"))
    assert spr.details["trailing_bytes"] == 39 and not spr.details["trailing_bytes_zero"]
    padded = intel_verify(next(v for v in INTEL if v.name == "tdx/v4-dcapqvl"))
    assert padded.details["trailing_bytes"] == 70 and padded.details["trailing_bytes_zero"]


def _sig_offset(v: IntelVector) -> int:
    version = v.quote[0]
    body = {1: 384, 2: 584, 3: 648}[v.expected["header"]["body_type"]]
    return 48 + (6 if version == 5 else 0) + body + 4


@pytest.mark.parametrize("v", INTEL, ids=lambda v: v.name)
def test_intel_flipped_bytes_rejected(v: IntelVector) -> None:
    sig = _sig_offset(v)
    body_end = sig - 4
    cases = [
        (body_end - 10, "quote_signed_by_attestation_key"),  # REPORTDATA in the signed body
        (30, "quote_signed_by_attestation_key"),  # header user data
        (sig + 5, "quote_signed_by_attestation_key"),  # the quote signature
        (sig + 64 + 3, "qe_report_data_binds_attestation_key"),  # the attestation key
        (sig + 128 + (6 if v.quote[0] >= 4 else 0) + 100, "qe_report_signed_by_pck"),  # QE report
    ]
    for offset, check in cases:
        with pytest.raises(VerificationError) as e:
            intel_verify(v, quote=flip(v.quote, offset), collateral={})
        assert e.value.check == check, (offset, e.value)


@pytest.mark.parametrize("v", INTEL, ids=lambda v: v.name)
def test_intel_flipped_pck_certificate_rejected(v: IntelVector) -> None:
    start = v.quote.index(b"-----BEGIN CERTIFICATE-----")
    end = v.quote.index(b"-----END CERTIFICATE-----", start)
    line = v.quote.rindex(b"\n", start, end - 2) + 1  # last base64 line of the leaf: its signature
    char = v.quote[line : line + 1]
    quote = v.quote[:line] + (b"A" if char != b"A" else b"B") + v.quote[line + 1 :]
    with pytest.raises(VerificationError) as e:
        intel_verify(v, quote=quote, collateral={})
    assert e.value.check in ("pck_leaf_signed_by_intermediate", "header_and_cert_type")


WITH_COLLATERAL = [v for v in INTEL if v.collateral and has_crls(v)]


@pytest.mark.parametrize("v", WITH_COLLATERAL, ids=lambda v: v.name)
@pytest.mark.parametrize("crl", ["root_ca_crl.der", "pck_crl.der"])
def test_intel_missing_crl_refused(v: IntelVector, crl: str) -> None:
    """CRLs are mandatory: without one, revocation is unchecked and the collateral is refused."""
    partial = {k: b for k, b in v.collateral.items() if k != crl}
    with pytest.raises(VerificationError) as e:
        intel_verify(v, collateral=partial)
    assert e.value.check == "collateral_missing" and crl.split(".")[0] in e.value.message


@pytest.mark.parametrize("v", WITH_COLLATERAL, ids=lambda v: v.name)
def test_intel_edited_collateral_rejected(v: IntelVector) -> None:
    tcb = v.collateral["tcb_info.json"]
    edited = tcb.replace(b'"tcbEvaluationDataNumber":', b'"tcbEvaluationDataNumber": ', 1)
    edited = edited.replace(b'"UpToDate"', b'"UpToDatf"', 1) if edited == tcb else edited
    with pytest.raises(VerificationError) as e:
        intel_verify(v, collateral={**v.collateral, "tcb_info.json": edited})
    assert e.value.check == "tcb_info_signature"
    qe = v.collateral["qe_identity.json"].replace(b'"isvprodid":', b'"isvprodid": ', 1)
    with pytest.raises(VerificationError) as e:
        intel_verify(v, collateral={**v.collateral, "qe_identity.json": qe})
    assert e.value.check == "qe_identity_signature"
    if "pck_crl.der" in v.collateral:
        crl = v.collateral["pck_crl.der"]
        with pytest.raises(VerificationError) as e:
            intel_verify(v, collateral={**v.collateral, "pck_crl.der": flip(crl, len(crl) - 10)})
        assert e.value.check == "crls_signed_and_not_revoked"


def test_intel_wrong_collateral_rejected() -> None:
    tdx = next(v for v in INTEL if v.name == "tdx/v4-dcapqvl")
    sgx = next(v for v in INTEL if v.name == "sgx/v3-dcapqvl")
    other_tdx = next(v for v in INTEL if v.name == "tdx/v4-trustee-q4")
    with pytest.raises(VerificationError) as e:
        intel_verify(
            tdx,
            collateral={
                **sgx.collateral,
                "root_ca_crl.der": tdx.collateral["root_ca_crl.der"],
                "pck_crl.der": tdx.collateral["pck_crl.der"],
            },
        )
    assert e.value.check == "tcb_info_id"
    with pytest.raises(VerificationError) as e:
        intel_verify(tdx, collateral=sgx.collateral)  # the SGX vector's PCK CRL is the Processor CA's
    assert e.value.check == "crls_signed_and_not_revoked"
    with pytest.raises(VerificationError) as e:
        intel_verify(
            tdx,
            collateral={
                **other_tdx.collateral,
                "root_ca_crl.der": tdx.collateral["root_ca_crl.der"],
                "pck_crl.der": tdx.collateral["pck_crl.der"],
            },
        )
    assert e.value.check == "tcb_info_matches_pck_fmspc_pceid"
    with pytest.raises(VerificationError) as e:
        intel_verify(tdx, collateral={k: b for k, b in tdx.collateral.items() if k != "tcb_signing_chain.pem"})
    assert e.value.check == "collateral_missing"


def test_intel_platform_mismatch_and_time() -> None:
    tdx = next(v for v in INTEL if v.name == "tdx/v4-dcapqvl")
    with pytest.raises(VerificationError) as e:
        verify_evidence("sgx", tdx.quote, at=tdx.at)
    assert e.value.check == "platform_mismatch"
    with pytest.raises(VerificationError) as e:
        intel_verify(tdx, at=datetime(2040, 1, 1, tzinfo=UTC))
    assert e.value.check == "certificate_validity"
    with pytest.raises(VerificationError) as e:
        intel_verify(tdx, at=datetime(2025, 6, 1))  # naive: ambiguous
    assert e.value.check == "verification_time"


def test_intel_truncated_quote_rejected() -> None:
    v = INTEL[0]
    for n in (10, 48, 500, len(v.quote) - 300):
        with pytest.raises(VerificationError) as e:
            intel_verify(v, quote=v.quote[:n], collateral={})
        assert e.value.check == "header_and_cert_type"
