"""AMD's KDS CRL: signed by the ARK (RSASSA-PSS), fresh at the verification time, not revoking the
ASK/ASVK, and mandatory in production.

Real reports are re-signed under a test ARK (amd_test_pki.py) because no AMD-signed CRL can be
fetched here and no revoked ASK exists; the real vectors, under the pinned AMD roots, show that a
CRL not signed by the real ARK is refused and that production refuses them without one.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from amd_test_pki import PSS, AmdTestPki
from att_vectors import accepting, snp_vectors
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from conclavium.attestation import VerificationError, evaluate_policy, load_policy, roots, verify_evidence

SNP = {v.name: v for v in snp_vectors()}
V = SNP["milan-v2-virtee"]
VLEK = SNP["milan-v3-vlek-trustee"]


@pytest.fixture(scope="module")
def vcek_pki() -> AmdTestPki:
    return AmdTestPki("Milan", "vcek")


@pytest.fixture(scope="module")
def vlek_pki() -> AmdTestPki:
    return AmdTestPki("Milan", "vlek")


def _leaf(v) -> bytes:  # type: ignore[no-untyped-def]
    return v.certs.get("vcek.der") or v.certs["vlek.der"]


def failures(claims, doc) -> set[str]:  # type: ignore[no-untyped-def]
    result = evaluate_policy(claims, load_policy(doc), report_data=bytes.fromhex(claims.report_data)[:32])
    return {c for c, _ in result.failures}


def _production(claims) -> dict:  # type: ignore[no-untyped-def]
    doc = accepting(claims)
    doc["snp"]["vmpl"] = [claims.details["vmpl"]]
    return doc


@pytest.mark.parametrize("which", ["vcek", "vlek"])
def test_resigned_report_with_crl_is_accepted_in_production(
    monkeypatch: pytest.MonkeyPatch, vcek_pki: AmdTestPki, vlek_pki: AmdTestPki, which: str
) -> None:
    pki, v = (vcek_pki, V) if which == "vcek" else (vlek_pki, VLEK)
    pki.pin(monkeypatch)
    report = pki.resign(v.report, _leaf(v))
    at = v.at
    claims = verify_evidence(
        "snp", report, certs=list(pki.certs().values()), collateral={"amd_crl.der": pki.crl(at)}, at=at
    )
    col = claims.details["collateral"]
    assert col["fresh"] is True and col["amd_crl"]["next_update"] == (at + timedelta(days=6)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    assert claims.measurement == SNP[v.name].expected["report"]["measurement"]
    assert failures(claims, _production(claims)) == set()
    # The same report without the CRL: production refuses it, development accepts it with a reason.
    bare = verify_evidence("snp", report, certs=list(pki.certs().values()), at=at)
    assert failures(bare, _production(bare)) == {"collateral_missing"}
    assert any("no AMD CRL" in r for r in bare.reasons)
    dev = {**_production(bare), "environment": "development"}
    assert failures(bare, dev) == set()


@pytest.mark.parametrize("which", ["vcek", "vlek"])
def test_revoked_intermediate_refused(
    monkeypatch: pytest.MonkeyPatch, vcek_pki: AmdTestPki, vlek_pki: AmdTestPki, which: str
) -> None:
    pki, v = (vcek_pki, V) if which == "vcek" else (vlek_pki, VLEK)
    pki.pin(monkeypatch)
    report = pki.resign(v.report, _leaf(v))
    with pytest.raises(VerificationError) as e:
        verify_evidence(
            "snp",
            report,
            certs=list(pki.certs().values()),
            collateral={"amd_crl.der": pki.crl(v.at, revoke_ask=True)},
            at=v.at,
        )
    assert e.value.check == "amd_crl_signed_and_not_revoked" and "is revoked" in e.value.message
    # Other serials listed do not revoke this chain.
    claims = verify_evidence(
        "snp",
        report,
        certs=list(pki.certs().values()),
        collateral={"amd_crl.der": pki.crl(v.at, revoked=[0x10002, 0x20001])},
        at=v.at,
    )
    assert claims.details["collateral"]["fresh"] is True


def test_crl_not_signed_by_the_ark_refused(monkeypatch: pytest.MonkeyPatch, vcek_pki: AmdTestPki) -> None:
    vcek_pki.pin(monkeypatch)
    report = vcek_pki.resign(V.report, _leaf(V))
    certs = list(vcek_pki.certs().values())
    other = AmdTestPki("Milan", "vcek")
    for crl, words in (
        (vcek_pki.crl(V.at, key=other.ark_key), "does not verify"),
        (vcek_pki.crl(V.at, rsa_padding=padding.PKCS1v15()), "RSASSA-PSS"),
        (vcek_pki.crl(V.at, key=vcek_pki.ask_key), "does not verify"),
        (b"not a crl", "cannot parse"),
    ):
        with pytest.raises(VerificationError) as e:
            verify_evidence("snp", report, certs=certs, collateral={"amd_crl.der": crl}, at=V.at)
        assert e.value.check == "amd_crl_signed_and_not_revoked" and words in e.value.message, e.value.message
    # A CRL of another product line's ARK (a Genoa test ARK) is not this chain's.
    genoa = AmdTestPki("Genoa", "vcek")
    with pytest.raises(VerificationError) as e:
        verify_evidence("snp", report, certs=certs, collateral={"amd_crl.der": genoa.crl(V.at)}, at=V.at)
    assert "not issued by ARK-Milan" in e.value.message


def test_stale_or_future_crl_refused_by_policy(monkeypatch: pytest.MonkeyPatch, vcek_pki: AmdTestPki) -> None:
    vcek_pki.pin(monkeypatch)
    report = vcek_pki.resign(V.report, _leaf(V))
    certs = list(vcek_pki.certs().values())
    for crl in (
        vcek_pki.crl(V.at, next_update=V.at - timedelta(minutes=1)),
        vcek_pki.crl(V.at, last_update=V.at + timedelta(hours=1), next_update=V.at + timedelta(days=7)),
    ):
        claims = verify_evidence("snp", report, certs=certs, collateral={"amd_crl.der": crl}, at=V.at)
        assert claims.details["collateral"]["fresh"] is False
        assert any(r.startswith("collateral stale: amd_crl") for r in claims.reasons)
        assert failures(claims, _production(claims)) == {"collateral_freshness"}
    # max_age_seconds judges the CRL's issue date too.
    claims = verify_evidence(
        "snp",
        report,
        certs=certs,
        collateral={"amd_crl.der": vcek_pki.crl(V.at, last_update=V.at - timedelta(days=3))},
        at=V.at,
    )
    doc = {**_production(claims), "collateral": {"max_age_seconds": 86400}}
    assert failures(claims, doc) == {"collateral_freshness"}


def test_real_vectors_need_a_crl_from_the_real_ark(vcek_pki: AmdTestPki) -> None:
    """Under AMD's pinned roots (nothing patched): the real reports verify, a CRL that is not
    ARK-Milan's is refused, and production refuses the report without a CRL."""
    claims = verify_evidence("snp", V.report, certs=list(V.certs.values()), at=V.at)
    assert failures(claims, _production(claims)) == {"collateral_missing"}
    certs = list(V.certs.values())
    with pytest.raises(VerificationError) as e:
        verify_evidence("snp", V.report, certs=certs, collateral={"amd_crl.der": vcek_pki.crl(V.at)}, at=V.at)
    assert e.value.check == "amd_crl_signed_and_not_revoked" and "not issued by ARK-Milan" in e.value.message
    # Named exactly like the real ARK, but signed by another key.
    real_ark = roots.amd_chain("Milan", "vcek")[0]
    last = V.at.replace(tzinfo=None) - timedelta(days=1)
    forged = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(real_ark.subject)
        .last_update(last)
        .next_update(last + timedelta(days=7))
        .sign(vcek_pki.ark_key, hashes.SHA384(), rsa_padding=PSS)
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(VerificationError) as e:
        verify_evidence("snp", V.report, certs=certs, collateral={"amd_crl.der": forged}, at=V.at)
    assert "does not verify with ARK-Milan" in e.value.message
