"""Revocation and freshness of Intel collateral, through a test PKI that re-signs real quotes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from att_vectors import accepting, intel_vectors
from intel_test_pki import IntelTestPki

from conclavium.attestation import VerificationError, evaluate_policy, load_policy, verify_evidence

V = next(v for v in intel_vectors() if v.name == "tdx/v4-dcapqvl")


@pytest.fixture
def pki(monkeypatch: pytest.MonkeyPatch) -> IntelTestPki:
    p = IntelTestPki()
    p.pin(monkeypatch)
    return p


def _verdict(quote: bytes, collateral: dict[str, bytes], at=V.at) -> set[str]:
    claims = verify_evidence("tdx", quote, collateral=collateral, at=at)
    doc = accepting(claims)
    result = evaluate_policy(claims, load_policy(doc), report_data=bytes.fromhex(claims.report_data)[:32], at=at)
    return {c for c, _ in result.failures}


def test_resigned_quote_verifies_like_the_real_one(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote)
    claims = verify_evidence("tdx", quote, collateral=pki.collateral(V.collateral, V.at), at=V.at)
    assert claims.status == "UpToDate"
    assert _verdict(quote, pki.collateral(V.collateral, V.at)) == set()
    # The real Intel-signed quote is not trusted while the test root is pinned.
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", V.quote, collateral=V.collateral, at=V.at)
    assert e.value.check == "root_is_pinned_intel_root"


def test_revoked_pck_refused(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote)
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", quote, collateral=pki.collateral(V.collateral, V.at, revoke_leaf=True), at=V.at)
    assert e.value.check == "crls_signed_and_not_revoked" and "revoked by the PCK CRL" in e.value.message


def test_revoked_pck_intermediate_refused(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote)
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", quote, collateral=pki.collateral(V.collateral, V.at, revoke_inter=True), at=V.at)
    assert e.value.check == "crls_signed_and_not_revoked" and "root CA CRL" in e.value.message


def test_crl_signed_by_another_key_refused(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote)
    col = pki.collateral(V.collateral, V.at)
    other = IntelTestPki()
    col["pck_crl.der"] = pki.crl(
        pki.inter, other.inter_key, V.at.replace(tzinfo=None), V.at.replace(tzinfo=None) + timedelta(days=1), []
    )
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", quote, collateral=col, at=V.at)
    assert e.value.check == "crls_signed_and_not_revoked"


def test_stale_crl_refused(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote)
    col = pki.collateral(V.collateral, V.at, crl_next_update=V.at - timedelta(minutes=1))
    assert _verdict(quote, col) == {"collateral_freshness"}


@pytest.mark.parametrize("crl", ["root_ca_crl.der", "pck_crl.der"])
def test_missing_crl_refused(pki: IntelTestPki, crl: str) -> None:
    quote = pki.requote(V.quote)
    col = pki.collateral(V.collateral, V.at)
    del col[crl]
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", quote, collateral=col, at=V.at)
    assert e.value.check == "collateral_missing"
