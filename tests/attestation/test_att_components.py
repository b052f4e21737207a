"""Every measured component, on every real vector: a policy pinning it accepts, one changing it refuses.

The accepting policy pins each component to the vector's own value (see `att_vectors.accepting`);
each refusal changes exactly one component and must fail with that component's check alone.
Vectors that are debug, stale or outdated are accepted only under the allowances they need, and
those allowances are refused by a production policy.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from att_vectors import accepting, intel_vectors, snp_vectors

from conclavium.attestation import PolicyError, evaluate_policy, load_policy, verify_evidence
from conclavium.attestation.claims import Claims
from conclavium.attestation.policy import TDX_LISTS

SNP = snp_vectors()
INTEL = [v for v in intel_vectors() if {"root_ca_crl.der", "pck_crl.der"} <= set(v.collateral)]
TDX = [v for v in INTEL if v.platform == "tdx"]
SGX = [v for v in INTEL if v.platform == "sgx"]
OTHER = "ab" * 48


def failures(claims: Claims, doc: dict[str, Any]) -> set[str]:
    result = evaluate_policy(claims, load_policy(doc), report_data=bytes.fromhex(claims.report_data)[:32])
    return {c for c, _ in result.failures}


def snp_base(v: Any) -> tuple[Claims, dict[str, Any]]:
    claims = verify_evidence("snp", v.report, certs=list(v.certs.values()), at=v.at)
    doc = accepting(claims)
    doc["snp"]["vmpl"] = [claims.details["vmpl"]]
    if claims.debug:
        doc.update(environment="development", allow_debug=True)
    return claims, doc


def intel_base(v: Any) -> tuple[Claims, dict[str, Any]]:
    claims = verify_evidence(v.platform, v.quote, collateral=v.collateral, at=v.at)
    doc = accepting(claims)
    doc["tcb_statuses"] = [claims.status]
    doc["trailing_bytes"] = "any"
    if claims.debug or claims.details["collateral"].get("fresh") is False:
        doc.update(environment="development", allow_debug=True, collateral={"require_fresh": False})
    return claims, doc


def bump(tcb: dict[str, int], comp: str) -> dict[str, int]:
    return {**tcb, comp: tcb[comp] + 1}


@pytest.mark.parametrize("v", SNP, ids=lambda v: v.name)
def test_snp_components(v: Any) -> None:
    claims, doc = snp_base(v)
    # The recorded vectors have no AMD CRL (none can be fetched here): production refuses them for
    # that alone, development does not require it. test_att_amd_crl.py covers the CRL.
    no_crl = set() if doc.get("environment") == "development" else {"collateral_missing"}
    assert failures(claims, doc) == no_crl
    product = claims.product

    def refused(change: Any) -> set[str]:
        d = copy.deepcopy(doc)
        change(d)
        return failures(claims, d) - no_crl

    assert refused(lambda d: d.update(measurements=[OTHER])) == {"measurement_not_allowed"}
    assert refused(lambda d: d["snp"].update(host_data=["11" * 32])) == {"host_data_not_allowed"}
    assert refused(lambda d: d["snp"].update(family_id=["11" * 16])) == {"family_id"}
    assert refused(lambda d: d["snp"].update(image_id=["11" * 16])) == {"image_id"}
    assert refused(lambda d: d["snp"].update(vmpl=[(claims.details["vmpl"] + 1) % 4])) == {"vmpl"}
    committed = claims.details["committed_tcb"]
    for comp in ("bootloader", "tee", "snp", "microcode"):
        assert refused(lambda d, c=comp: d["minimum_tcb"].update({product: bump(claims.tcb, c)})) == {"minimum_tcb"}
        assert refused(lambda d, c=comp: d["snp"].update(minimum_committed_tcb={product: bump(committed, c)})) == {
            "committed_tcb"
        }
    if claims.details["policy_bits"]["smt"]:
        assert refused(lambda d: d["snp"].update(allow_smt=False)) == {"guest_policy"}
    if not claims.details["policy_bits"]["single_socket"]:
        assert refused(lambda d: d["snp"].update(require_single_socket=True)) == {"guest_policy"}
    if doc.get("environment") != "development":
        # Production refuses what it leaves unset: no TCB floor, no host data, no family/image id.
        assert refused(lambda d: d.pop("minimum_tcb")) == {"minimum_tcb"}
        assert refused(lambda d: d["snp"].pop("host_data")) == {"host_data_not_allowed"}
        assert refused(lambda d: d["snp"].pop("family_id")) == {"family_id"}
        assert refused(lambda d: d["snp"].update(family_id="any", image_id="any")) == set()
        # Without an explicit committed floor, the reported floor applies to COMMITTED_TCB too.
        assert refused(lambda d: d["snp"].pop("minimum_committed_tcb")) == set()


def test_snp_debug_guest_needs_development() -> None:
    v = next(v for v in SNP if v.name == "milan-v2-gosevguest")
    claims, doc = snp_base(v)
    assert claims.debug and doc["environment"] == "development"
    assert failures(claims, {**doc, "allow_debug": False}) == {"debug_not_allowed"}
    with pytest.raises(PolicyError):
        load_policy({**doc, "environment": "production"})


@pytest.mark.parametrize("v", TDX, ids=lambda v: v.name)
def test_tdx_components(v: Any) -> None:
    claims, doc = intel_base(v)
    assert failures(claims, doc) == set(), claims.status
    body = claims.details["body"]

    def refused(change: Any) -> set[str]:
        d = copy.deepcopy(doc)
        change(d)
        return failures(claims, d)

    assert refused(lambda d: d.update(measurements=[OTHER])) == {"measurement_not_allowed"}
    for name in TDX_LISTS:
        assert refused(lambda d, n=name: d["tdx"].update({n: [OTHER]})) == {name}, name
        # An allow-list with more entries still accepts the vector's value.
        assert refused(lambda d, n=name: d["tdx"].update({n: [OTHER, body[n]]})) == set()
    svn = bytes.fromhex(body["tee_tcb_svn"])
    for i in (0, 1, 2):
        if svn[i] < 255:
            floor = svn[:i] + bytes([svn[i] + 1]) + svn[i + 1 :]
            assert refused(lambda d, f=floor: d["tdx"].update(minimum_tee_tcb_svn=f.hex())) == {"tee_tcb_svn"}
    assert refused(lambda d: d.update(tcb_statuses=["SomethingElse"])) == {"tcb_status"}
    if doc.get("environment") != "development":
        for name in ("rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrseam"):
            assert refused(lambda d, n=name: d["tdx"].pop(n)) == {name}
            with pytest.raises(PolicyError):
                load_policy({**doc, "tdx": {**doc["tdx"], name: "any"}})
        assert refused(lambda d: d["tdx"].pop("minimum_tee_tcb_svn")) == {"tee_tcb_svn"}
        waived = {"mrowner": "any", "mrownerconfig": "any", "xfam": "any", "td_attributes": "any"}
        assert refused(lambda d: d["tdx"].update(waived)) == set()
        assert refused(lambda d: d["tdx"].pop("xfam")) == {"xfam"}
        # MRCONFIGID may also be pinned through host data (it is the TDX host data claim).
        assert refused(lambda d: (d["tdx"].pop("mrconfigid"), d.update(host_data=[body["mrconfigid"]]))) == set()
        assert refused(lambda d: d["tdx"].pop("mrconfigid")) == {"mrconfigid"}


def test_tdx_wrong_module_identity_refused() -> None:
    """MRSEAM names the TDX module build; a policy pinning another module refuses the quote."""
    v = next(v for v in TDX if v.name == "tdx/v4-dcapqvl")
    claims, doc = intel_base(v)
    other = next(x for x in TDX if x.name == "tdx/v5-tdx15-gotdxguest")
    other_claims = verify_evidence("tdx", other.quote, collateral=other.collateral, at=other.at)
    assert other_claims.details["body"]["mrseam"] != claims.details["body"]["mrseam"]
    doc["tdx"]["mrseam"] = [other_claims.details["body"]["mrseam"]]
    assert failures(claims, doc) == {"mrseam"}


@pytest.mark.parametrize("v", SGX, ids=lambda v: v.name)
def test_sgx_identity_by_mrenclave_or_signer(v: Any) -> None:
    claims, doc = intel_base(v)
    assert failures(claims, doc) == set()
    body = claims.details["body"]
    signer = {"mrsigner": body["mrsigner"], "isv_prod_id": body["isvprodid"], "minimum_isv_svn": body["isvsvn"]}
    by_signer = {**doc, "measurements": [], "sgx": {"signers": [signer]}}
    assert failures(claims, by_signer) == set()
    for change in (
        {"mrsigner": OTHER[:64]},
        {"isv_prod_id": (body["isvprodid"] + 1) % 65536},
        {"minimum_isv_svn": body["isvsvn"] + 1},
    ):
        wrong = {**by_signer, "sgx": {"signers": [{**signer, **change}]}}
        assert failures(claims, wrong) == {"measurement_not_allowed"}, change
    assert failures(claims, {**doc, "measurements": [OTHER[:64]]}) == {"measurement_not_allowed"}
    with pytest.raises(PolicyError):
        load_policy({**doc, "sgx": {"signers": [{"mrsigner": body["mrsigner"]}]}})


def test_intel_quote_without_collateral_refused_even_if_listed() -> None:
    """`Unknown` is no bypass: a quote whose collateral was not verified is refused by every policy."""
    for v in intel_vectors():
        if v.collateral:
            continue
        claims = verify_evidence(v.platform, v.quote, at=v.at)
        doc = accepting(claims)
        doc.update(environment="development", allow_debug=True, trailing_bytes="any")
        assert "collateral_missing" in failures(claims, doc)
        with pytest.raises(PolicyError):
            load_policy({**doc, "tcb_statuses": ["Unknown"]})
