"""Policy evaluation, virtual evidence gating, and the evidence providers (faked kernel trees)."""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from att_vectors import accepting, intel_vectors, snp_vectors

from conclavium.attestation import (
    PolicyError,
    VerificationError,
    evaluate_policy,
    expected_report_data,
    load_policy,
    make_virtual_evidence,
    verify_and_evaluate,
    verify_evidence,
)
from conclavium.attestation.policy import Policy
from conclavium.attestation.providers import (
    ConfigfsTsmProvider,
    GramineProvider,
    ProviderError,
    VirtualProvider,
    detect_provider,
    parse_snp_cert_table,
    parse_snp_report_response,
)
from conclavium.crypto.keys import PrivateKey

AT = datetime(2025, 6, 1, tzinfo=UTC)
SNP = {v.name: v for v in snp_vectors()}
INTEL = {v.name: v for v in intel_vectors()}


# The recorded SNP vectors come without AMD's CRL (none can be fetched here), so a production policy
# refuses them for that alone; test_att_amd_crl.py covers the CRL through a test ARK.
NO_CRL = {"collateral_missing"}


def snp_claims(name: str):
    v = SNP[name]
    return verify_evidence("snp", v.report, certs=list(v.certs.values()), at=v.at)


def intel_claims(name: str, **kw):
    v = INTEL[name]
    return verify_evidence(v.platform, v.quote, collateral=v.collateral, at=kw.get("at", v.at))


def policy_for(claims, **extra) -> Policy:
    """`accepting(claims)` with `extra` merged in (sections merge key by key)."""
    doc = accepting(claims)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict) and key in ("snp", "tdx", "sgx"):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return load_policy(doc)


def rd(claims) -> bytes:
    return bytes.fromhex(claims.report_data)[:32]


def checks(result) -> set[str]:
    return {c for c, _ in result.failures}


def test_expected_report_data_is_sha256_of_spkis_padded() -> None:
    keys = [PrivateKey.generate().public_key.spki, PrivateKey.generate("ES256").public_key.spki]
    out = expected_report_data(keys)
    assert len(out) == 64 and out[32:] == b"\0" * 32
    assert out[:32] == hashlib.sha256(keys[0] + keys[1]).digest()
    assert expected_report_data(keys[::-1]) != out
    with pytest.raises(ValueError):
        expected_report_data([])


def test_snp_allowed_measurement_passes() -> None:
    claims = snp_claims("milan-v2-trustee")
    result = evaluate_policy(claims, policy_for(claims), report_data=rd(claims))
    assert checks(result) == NO_CRL, result.failures
    dev = evaluate_policy(claims, policy_for(claims, environment="development"), report_data=rd(claims))
    assert dev.allowed, dev.failures


def test_snp_policy_refusals() -> None:
    claims = snp_claims("milan-v2-trustee")
    assert "measurement_not_allowed" in checks(
        evaluate_policy(claims, policy_for(claims, measurements=["00" * 48]), report_data=rd(claims))
    )
    pol = policy_for(claims, minimum_tcb={"Milan": {"snp": 9, "microcode": 115}})
    assert checks(evaluate_policy(claims, pol, report_data=rd(claims))) == {"minimum_tcb"} | NO_CRL
    pol = policy_for(claims, host_data=["11" * 32])
    assert "host_data_not_allowed" in checks(evaluate_policy(claims, pol, report_data=rd(claims)))
    rule = {"platform": "snp", "measurement": claims.measurement, "host_data": "22" * 32}
    assert "measurement_not_allowed" in checks(
        evaluate_policy(claims, policy_for(claims, measurements=[rule]), report_data=rd(claims))
    )
    assert "report_data_binding" in checks(evaluate_policy(claims, policy_for(claims), report_data=b"\1" * 32))
    assert "report_data_binding" in checks(evaluate_policy(claims, policy_for(claims)))
    assert "platform_not_allowed" in checks(
        evaluate_policy(claims, policy_for(claims, platforms=["tdx"]), report_data=rd(claims))
    )


def test_snp_debug_guest_refused() -> None:
    claims = snp_claims("milan-v2-gosevguest")
    assert checks(evaluate_policy(claims, policy_for(claims), report_data=rd(claims))) == {"debug_not_allowed"} | NO_CRL
    with pytest.raises(PolicyError):
        load_policy({"allow_debug": True})
    dev = policy_for(claims, environment="development", allow_debug=True)
    assert evaluate_policy(claims, dev, report_data=rd(claims)).allowed


def test_snp_vmpl_policy() -> None:
    claims = snp_claims("milan-v3-vlek-trustee")
    assert checks(evaluate_policy(claims, policy_for(claims), report_data=rd(claims))) == {"vmpl"} | NO_CRL
    assert checks(evaluate_policy(claims, policy_for(claims, snp={"vmpl": [0, 1]}), report_data=rd(claims))) == NO_CRL


def test_report_data_binding_with_keys() -> None:
    claims = snp_claims("milan-v2-trustee")
    key = PrivateKey.generate().public_key.spki
    bound = replace(claims, report_data=expected_report_data([key]).hex())
    assert checks(evaluate_policy(bound, policy_for(bound, report_data="exact"), public_keys=[key])) == NO_CRL
    other = PrivateKey.generate().public_key.spki
    assert "report_data_binding" in checks(evaluate_policy(bound, policy_for(bound), public_keys=[other]))


@pytest.mark.parametrize(
    ("name", "failures"),
    [
        ("tdx/v4-dcapqvl", set()),
        ("tdx/v4-trustee-q4", {"debug_not_allowed", "collateral_freshness"}),
        ("tdx/v5-tdx15-dcapqvl-outdated", {"tcb_status"}),
        ("tdx/v4-gotdxguest-spr", {"tcb_status", "trailing_bytes", "collateral_freshness"}),
        ("sgx/v3-dcapqvl", {"tcb_status"}),
    ],
)
def test_intel_policy_outcomes(name: str, failures: set[str]) -> None:
    claims = intel_claims(name)
    assert checks(evaluate_policy(claims, policy_for(claims), report_data=rd(claims))) == failures


def test_intel_accepted_statuses_and_stale_collateral() -> None:
    claims = intel_claims("sgx/v3-dcapqvl")
    pol = policy_for(claims, tcb_statuses=["UpToDate", "ConfigurationAndSWHardeningNeeded"])
    assert evaluate_policy(claims, pol, report_data=rd(claims)).allowed
    stale = intel_claims("tdx/v5-tdx15-gotdxguest")
    assert stale.status == "UpToDate"
    assert checks(evaluate_policy(stale, policy_for(stale), report_data=rd(stale))) == {"collateral_freshness"}
    with pytest.raises(PolicyError):
        policy_for(stale, collateral={"require_fresh": False})
    lax = policy_for(stale, environment="development", collateral={"require_fresh": False})
    assert evaluate_policy(stale, lax, report_data=rd(stale)).allowed
    aged = policy_for(claims, tcb_statuses=["ConfigurationAndSWHardeningNeeded"], collateral={"max_age_seconds": 60})
    assert checks(evaluate_policy(claims, aged, report_data=rd(claims))) == {"collateral_freshness"}


def test_intel_without_collateral_is_unknown_and_refused() -> None:
    v = INTEL["tdx/quote-only-trustee/azure_td_quote.bin"]
    claims = verify_evidence("tdx", v.quote, at=v.at)
    assert claims.status == "Unknown"
    assert checks(evaluate_policy(claims, policy_for(claims), report_data=rd(claims))) == {"collateral_missing"}
    with pytest.raises(PolicyError):
        load_policy({"tcb_statuses": ["UpToDate", "Unknown"]})


def test_sgx_debug_enclave_refused() -> None:
    claims = intel_claims("sgx/v3-occlum-trustee")
    assert claims.debug
    assert "debug_not_allowed" in checks(evaluate_policy(claims, policy_for(claims), report_data=rd(claims)))


def test_virtual_refused_without_policy_and_in_production() -> None:
    ev = make_virtual_evidence(b"\1" * 48, b"\2" * 32, b"\3" * 32)
    with pytest.raises(VerificationError) as e:
        verify_evidence("virtual", ev, at=AT)
    assert e.value.check == "virtual_not_allowed"
    with pytest.raises(PolicyError) as pe:
        load_policy({"environment": "production", "platforms": ["virtual"]})
    assert pe.value.check == "virtual_not_allowed"
    forced = Policy(environment="production", platforms=("virtual",))
    with pytest.raises(VerificationError):
        verify_evidence("virtual", ev, at=AT, policy=forced)
    prod = load_policy({"measurements": ["01" * 48]})
    with pytest.raises(VerificationError):
        verify_evidence("virtual", ev, at=AT, policy=prod)


def test_virtual_allowed_in_development_with_binding() -> None:
    key = PrivateKey.generate().public_key.spki
    dev = load_policy({"environment": "development", "platforms": ["virtual"], "measurements": ["01" * 48]})
    ev = make_virtual_evidence(b"\1" * 48, b"", expected_report_data([key]))
    claims = verify_and_evaluate("virtual", ev, dev, public_keys=[key], at=AT)
    assert claims.status == "Insecure" and claims.platform == "virtual"
    with pytest.raises(PolicyError) as e:
        verify_and_evaluate("virtual", ev, dev, public_keys=[PrivateKey.generate().public_key.spki], at=AT)
    assert e.value.check == "report_data_binding"
    with pytest.raises(PolicyError) as e:
        verify_and_evaluate("virtual", make_virtual_evidence(b"\2" * 48, b"", b""), dev, public_keys=[key], at=AT)
    assert e.value.check == "measurement_not_allowed"


@pytest.mark.parametrize(
    "bad",
    [
        b"not json",
        b"[]",
        b'{"measurement": "00"}',
        b'{"platform": "virtual", "measurement": "zz"}',
        b'{"platform": "virtual", "measurement": "00", "extra": 1}',
    ],
)
def test_virtual_malformed(bad: bytes) -> None:
    dev = load_policy({"environment": "development", "platforms": ["virtual"], "measurements": "any"})
    with pytest.raises(VerificationError) as e:
        verify_evidence("virtual", bad, at=AT, policy=dev)
    assert e.value.check == "virtual_format"


def test_policy_format_errors() -> None:
    for doc in (
        {"nope": 1},
        {"environment": "staging"},
        {"platforms": ["x"]},
        {"measurements": "any"},
        {"report_data": "none"},
        {"trailing_bytes": "some"},
        {"minimum_tcb": {"Milan": {"snp": "x"}}},
    ):
        with pytest.raises(PolicyError):
            load_policy(doc)


def _cert_table(entries: dict[str, bytes]) -> bytes:
    header_len = 24 * (len(entries) + 1)
    header, body = b"", b""
    for guid, data in entries.items():
        header += uuid.UUID(guid).bytes_le + struct.pack("<II", header_len + len(body), len(data))
        body += data
    return header + b"\0" * 24 + body


class FakeTsm(ConfigfsTsmProvider):
    """The kernel's side of configfs-tsm, on a plain directory: attributes appear on mkdir."""

    def __init__(self, root: str, outblob: bytes, provider: str, auxblob: bytes = b"") -> None:
        super().__init__(root)
        self.fake = (outblob, provider, auxblob)
        self.entries: list[Path] = []

    def _make_entry(self, path: Path) -> None:
        super()._make_entry(path)
        outblob, provider, auxblob = self.fake
        (path / "outblob").write_bytes(outblob)
        (path / "provider").write_text(provider + "\n")
        (path / "generation").write_text("1\n")
        if auxblob:
            (path / "auxblob").write_bytes(auxblob)
        self.entries.append(path)


def test_configfs_tsm_provider_on_fake_tree(tmp_path: Path) -> None:
    v = SNP["milan-v2-virtee"]
    aux = _cert_table({"63da758d-e664-4564-adc5-f4b93be8accd": v.certs["vcek.der"]})
    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    provider = FakeTsm(str(root), v.report, "sev_guest", aux)
    assert (
        detect_provider(
            configfs_root=str(root), sev_guest=str(tmp_path / "none"), gramine_root=str(tmp_path / "none")
        ).name
        == "configfs-tsm"
    )
    ev = provider.get_evidence(b"\xaa" * 64)
    assert ev.platform == "snp" and ev.evidence == v.report
    assert ev.certs == {"vcek.der": v.certs["vcek.der"]}
    assert (provider.entries[0] / "inblob").read_bytes() == b"\xaa" * 64
    claims = verify_evidence("snp", ev.evidence, certs=list(ev.certs.values()), at=v.at)
    assert claims.measurement == v.expected["report"]["measurement"]
    tdx = FakeTsm(str(root), b"quote", "tdx_guest").get_evidence(b"\1")
    assert tdx.platform == "tdx" and tdx.certs == {}
    with pytest.raises(ProviderError):
        FakeTsm(str(root), b"x", "mystery_guest").get_evidence(b"")
    with pytest.raises(ProviderError):
        provider.get_evidence(b"\0" * 65)
    with pytest.raises(ProviderError):
        ConfigfsTsmProvider(str(tmp_path / "absent")).get_evidence(b"")


def test_configfs_tsm_tdx_brings_the_ccel_event_log(tmp_path: Path) -> None:
    from tdx_test_log import BootChain

    root = tmp_path / "tsm" / "report"
    root.mkdir(parents=True)
    ccel = tmp_path / "CCEL"
    provider = FakeTsm(str(root), b"quote", "tdx_guest")
    provider.ccel = ccel
    assert provider.get_evidence(b"\1").event_log == b""
    ccel.write_bytes(BootChain().log())
    ev = provider.get_evidence(b"\1")
    assert ev.platform == "tdx" and ev.event_log == ccel.read_bytes()
    snp = FakeTsm(str(root), SNP["milan-v2-virtee"].report, "sev_guest")
    snp.ccel = ccel
    assert snp.get_evidence(b"\1").event_log == b""


def test_configfs_tsm_generation_race_detected(tmp_path: Path) -> None:
    class Racy(FakeTsm):
        calls = 0

        @staticmethod
        def _read_generation(entry: Path) -> str:
            Racy.calls += 1
            return str(Racy.calls)

    with pytest.raises(ProviderError, match="concurrently"):
        Racy(str(tmp_path), b"x", "sev_guest").get_evidence(b"")


def test_gramine_provider_on_fake_tree(tmp_path: Path) -> None:
    v = INTEL["sgx/v3-dcapqvl"]
    (tmp_path / "quote").write_bytes(v.quote)
    (tmp_path / "attestation_type").write_text("dcap")
    ev = GramineProvider(str(tmp_path)).get_evidence(b"\x42" * 32)
    assert ev.platform == "sgx" and ev.evidence == v.quote
    assert (tmp_path / "user_report_data").read_bytes() == b"\x42" * 32 + b"\0" * 32
    assert (
        detect_provider(
            configfs_root=str(tmp_path / "x"), sev_guest=str(tmp_path / "x"), gramine_root=str(tmp_path)
        ).name
        == "gramine"
    )


def test_detect_provider_never_falls_back_to_virtual_silently(tmp_path: Path) -> None:
    none = str(tmp_path / "none")
    with pytest.raises(ProviderError):
        detect_provider(configfs_root=none, sev_guest=none, gramine_root=none)
    provider = detect_provider(configfs_root=none, sev_guest=none, gramine_root=none, allow_virtual=True)
    assert isinstance(provider, VirtualProvider)
    ev = provider.get_evidence(b"\5" * 64)
    dev = load_policy(
        {"environment": "development", "platforms": ["virtual"], "measurements": "any", "report_data": "none"}
    )
    assert verify_evidence("virtual", ev.evidence, at=AT, policy=dev).report_data == "05" * 64


def test_snp_report_response_and_cert_table() -> None:
    report = SNP["milan-v2-trustee"].report
    resp = struct.pack("<II", 0, len(report)) + b"\0" * 24 + report + b"\0" * 100
    assert parse_snp_report_response(resp) == report
    with pytest.raises(ProviderError):
        parse_snp_report_response(struct.pack("<II", 0x16, 0) + b"\0" * 24)
    table = _cert_table(
        {"c0b406a4-a803-4952-9743-3fb6014cd0ae": b"ark", "4ab7b379-bbac-4fe4-a02f-05aef327c782": b"ask"}
    )
    assert parse_snp_cert_table(table) == {"ark.der": b"ark", "ask.der": b"ask"}
