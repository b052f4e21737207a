"""The attestation service's job: collateral from a configured source, cached, served to joiners.

A loopback mirror serves the recorded vectors in the Intel PCS v4 and AMD KDS layouts; the service
runs as a real process with Redis and points at it. What it returns must verify the evidence at the
vector's time; what the source cannot provide is an error (502, outcome `error`), and a policy
refusal is a 422 without a token, never a 200 "verified". AMD's CRLs cannot be recorded (none can
be fetched here), so the mirror's KDS CRLs are issued by test ARKs (amd_test_pki.py), and a second
KDS mirror (`/kds-test`) serves a real report re-signed under the Milan test PKI with its VCEK and CRL.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from amd_test_pki import AmdTestPki
from att_vectors import VECTORS, accepting, intel_vectors, snp_vectors
from prometheus_client.parser import text_string_to_metric_families

from conclavium.attestation import VerificationError, evaluate_policy, load_policy, verify_evidence
from conclavium.attestation.snp import decode_tcb, parse_report
from conclavium.crypto.keys import PrivateKey
from conclavium.local.processes import free_port, wait_for_port
from services.attestation.collateral import encode_chain_header

ROOT = Path(__file__).resolve().parents[2]
INTEL = {v.name: v for v in intel_vectors()}
SNP = {v.name: v for v in snp_vectors()}
TDX = INTEL["tdx/v4-dcapqvl"]
SGX = INTEL["sgx/v3-dcapqvl"]
UNSERVED_TDX = INTEL["tdx/v4-gotdxguest-spr"]  # another FMSPC: the mirror has no TCB info for it


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _intel_routes(prefix: str, v: Any, platform: str, fmspc: str, ca: str) -> dict[str, tuple[bytes, dict[str, str]]]:
    col = v.collateral
    chain = {"TCB-Info-Issuer-Chain": encode_chain_header(col["tcb_signing_chain.pem"])}
    return {
        f"{prefix}/{platform}/certification/v4/tcb?fmspc={fmspc}": (col["tcb_info.json"], chain),
        f"{prefix}/{platform}/certification/v4/qe/identity": (col["qe_identity.json"], {}),
        f"{prefix}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der": (col["pck_crl.der"], {}),
        # PCS answers the root CA CRL hex-encoded; the service accepts that as well as DER.
        f"{prefix}/sgx/certification/v4/rootcacrl": (col["root_ca_crl.der"].hex().encode(), {}),
    }


def _vcek_path(report_bytes: bytes, product: str) -> str:
    report = parse_report(report_bytes)
    tcb = decode_tcb(report.reported_tcb, product)
    params = f"blSPL={tcb['bootloader']}&teeSPL={tcb['tee']}&snpSPL={tcb['snp']}&ucodeSPL={tcb['microcode']}"
    return f"/vcek/v1/{product}/{report.chip_id.hex()}?{params}"


def _kds_routes(pki: dict[str, AmdTestPki]) -> dict[str, tuple[bytes, dict[str, str]]]:
    out = {}
    for name in ("milan-v2-virtee", "genoa-v3-azure-hcl-trustee"):
        v = SNP[name]
        product = "Genoa" if "genoa" in name else "Milan"
        leaf = v.certs.get("vcek.der") or v.certs["vcek.pem"]
        out["/kds" + _vcek_path(v.report, product)] = (leaf, {})
        out[f"/kds/vcek/v1/{product}/crl"] = (pki[product].crl(v.at), {})
    out["/kds/vlek/v1/Milan/crl"] = (pki["Milan"].crl(SNP["milan-v3-vlek-trustee"].at), {})
    return out


class Mirror:
    """A loopback HTTP server in its own thread and event loop; `down` makes it answer 503."""

    def __init__(self) -> None:
        self.pki = {"Milan": AmdTestPki("Milan"), "Genoa": AmdTestPki("Genoa")}
        self.routes: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.routes.update(_intel_routes("/tdx-mirror", TDX, "tdx", "b0c06f000000", "platform"))
        self.routes.update(_intel_routes("/sgx-mirror", SGX, "sgx", "00a067110000", "processor"))
        self.routes.update(_kds_routes(self.pki))
        # A real Milan report re-signed under the Milan test PKI, served with its VCEK and CRL.
        v = SNP["milan-v2-virtee"]
        milan = self.pki["Milan"]
        self.resigned = milan.resign(v.report, v.certs["vcek.der"])
        self.routes["/kds-test" + _vcek_path(self.resigned, "Milan")] = (milan.certs()["vcek.der"], {})
        self.routes["/kds-test/vcek/v1/Milan/crl"] = (milan.crl(v.at), {})
        self.down = False
        self.hits: list[str] = []
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        key = request.path_qs
        self.hits.append(key)
        if self.down:
            return web.Response(status=503)
        if key not in self.routes:
            return web.Response(status=404)
        body, headers = self.routes[key]
        return web.Response(body=body, headers=headers)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()
        self.started.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def mirror() -> Iterator[Mirror]:
    m = Mirror()
    m.start()
    yield m
    m.stop()


def _service(tmp: Path, redis_url: str, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.attestation.main",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--redis-url",
            redis_url,
            "--key",
            str(tmp / f"key-{port}.pem"),
            "--log-level",
            "WARNING",
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, 20, proc)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, redis_url: str, mirror: Mirror) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("collateral")
    base = f"http://127.0.0.1:{mirror.port}"
    procs = {
        "tdx": _service(tmp, redis_url, "--pcs-url", base + "/tdx-mirror", "--kds-url", base + "/kds"),
        "sgx": _service(tmp, redis_url, "--pcs-url", base + "/sgx-mirror"),
        "none": _service(tmp, redis_url),
        "kds-test": _service(tmp, redis_url, "--kds-url", base + "/kds-test"),
    }
    try:
        yield {name: url for name, (_, url) in procs.items()}
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            assert proc.wait(timeout=10) == 0


async def _post(url: str, path: str, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.post(url + path, json=doc) as r:
        return r.status, await r.json()


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        return await r.text()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def _files(doc: dict[str, Any], key: str) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in doc[key].items()}


@pytest.mark.parametrize(("which", "v"), [("tdx", TDX), ("sgx", SGX)], ids=["tdx", "sgx"])
async def test_intel_collateral_fetched_verifies_and_is_cached(
    services: dict[str, str], mirror: Mirror, which: str, v: Any
) -> None:
    status, doc = await _post(
        services[which], "/v1/attestation/collateral", {"platform": v.platform, "evidence": b64(v.quote)}
    )
    assert status == 200, doc
    col = _files(doc, "collateral")
    assert col["tcb_info.json"] == v.collateral["tcb_info.json"]
    assert col["root_ca_crl.der"] == v.collateral["root_ca_crl.der"]
    claims = verify_evidence(v.platform, v.quote, collateral=col, at=v.at)
    assert claims.status == v.expected["platform_tcb"]["status"].replace(
        "ConfigurationAndSWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"
    )
    # Served from the cache while the source is down.
    mirror.down = True
    try:
        status, again = await _post(
            services[which], "/v1/attestation/collateral", {"platform": v.platform, "evidence": b64(v.quote)}
        )
    finally:
        mirror.down = False
    assert status == 200 and again == doc
    text = await _metrics(services[which])
    assert 'conclavium_attestation_collateral_fetches_total{outcome="cached",source="pcs"}' in text


async def test_snp_vcek_and_crl_fetched_from_kds(services: dict[str, str], mirror: Mirror) -> None:
    for name in ("milan-v2-virtee", "genoa-v3-azure-hcl-trustee"):
        v = SNP[name]
        product = "Genoa" if "genoa" in name else "Milan"
        status, doc = await _post(
            services["tdx"], "/v1/attestation/collateral", {"platform": "snp", "evidence": b64(v.report)}
        )
        assert status == 200, (name, doc)
        certs = _files(doc, "certs")
        claims = verify_evidence("snp", v.report, certs=list(certs.values()), at=v.at)
        assert claims.platform == "snp", name
        assert _files(doc, "collateral") == {"amd_crl.der": mirror.routes[f"/kds/vcek/v1/{product}/crl"][0]}
    # /verify fetches VCEK and CRL and checks the CRL: the mirror's is not signed by the real ARK-Milan.
    v = SNP["milan-v2-virtee"]
    verify = {"platform": "snp", "evidence": b64(v.report), "at": v.at.isoformat()}
    status, doc = await _post(services["tdx"], "/v1/attestation/verify", verify)
    assert status == 422 and doc["error"]["check"] == "amd_crl_signed_and_not_revoked", doc
    vlek = SNP["milan-v3-vlek-trustee"]
    status, doc = await _post(
        services["tdx"], "/v1/attestation/collateral", {"platform": "snp", "evidence": b64(vlek.report)}
    )
    assert status == 422 and doc["error"]["code"] == "evidence_unreadable" and "VLEK" in doc["error"]["message"]
    # The host supplies the VLEK; the service still brings the ARK's VLEK CRL.
    crl_only = {"platform": "snp", "evidence": b64(vlek.report), "parts": ["crl"]}
    status, doc = await _post(services["tdx"], "/v1/attestation/collateral", crl_only)
    assert status == 200 and "certs" not in doc, doc
    assert _files(doc, "collateral") == {"amd_crl.der": mirror.routes["/kds/vlek/v1/Milan/crl"][0]}
    # A v2 report does not name its product: a CRL-only request must.
    status, doc = await _post(
        services["tdx"], "/v1/attestation/collateral", {"platform": "snp", "evidence": b64(v.report), "parts": ["crl"]}
    )
    assert status == 422 and "product" in doc["error"]["message"]
    for parts in ([], ["vcek"], "crl"):
        status, doc = await _post(
            services["tdx"],
            "/v1/attestation/collateral",
            {"platform": "snp", "evidence": b64(v.report), "parts": parts},
        )
        assert status == 400, parts


async def test_snp_crl_from_the_service_admits_a_resigned_report(
    services: dict[str, str], mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end under the Milan test PKI: what the service fetched verifies, the CRL checked, and a
    production policy accepts; the served CRL's nextUpdate is a metric; a CRL that is gone later is
    served from the cache; a revoked ASK in the served CRL gets the report refused."""
    v = SNP["milan-v2-virtee"]
    pki = mirror.pki["Milan"]
    pki.pin(monkeypatch)
    request = {"platform": "snp", "evidence": b64(mirror.resigned)}
    status, doc = await _post(services["kds-test"], "/v1/attestation/collateral", request)
    assert status == 200, doc
    certs, col = _files(doc, "certs"), _files(doc, "collateral")
    claims = verify_evidence("snp", mirror.resigned, certs=list(certs.values()), collateral=col, at=v.at)
    assert claims.details["collateral"]["fresh"] is True
    policy = accepting(claims)
    policy["snp"]["vmpl"] = [claims.details["vmpl"]]
    result = evaluate_policy(claims, load_policy(policy), report_data=bytes.fromhex(claims.report_data)[:32])
    assert result.allowed, result.failures
    text = await _metrics(services["kds-test"])
    served = _sample(text, "conclavium_attestation_crl_next_update_timestamp_seconds", crl="vcek_Milan", source="kds")
    assert served == (v.at + timedelta(days=6)).timestamp()
    mirror.down = True
    try:
        status, again = await _post(services["kds-test"], "/v1/attestation/collateral", request)
    finally:
        mirror.down = False
    assert status == 200 and again == doc
    path = "/kds-test/vcek/v1/Milan/crl"
    saved = mirror.routes[path]
    mirror.routes[path] = (pki.crl(v.at, revoke_ask=True), {})
    try:
        with pytest.raises(VerificationError, match="revoked"):
            verify_evidence(
                "snp",
                mirror.resigned,
                certs=list(certs.values()),
                collateral={"amd_crl.der": mirror.routes[path][0]},
                at=v.at,
            )
    finally:
        mirror.routes[path] = saved


async def test_unavailable_collateral_is_an_error_outcome(services: dict[str, str]) -> None:
    v = UNSERVED_TDX
    status, doc = await _post(
        services["tdx"], "/v1/attestation/collateral", {"platform": "tdx", "evidence": b64(v.quote)}
    )
    assert status == 502 and doc["error"]["code"] == "collateral_unavailable"
    # /verify without collateral asks the source too; it cannot decide either.
    status, doc = await _post(services["tdx"], "/v1/attestation/verify", {"platform": "tdx", "evidence": b64(v.quote)})
    assert status == 502
    text = await _metrics(services["tdx"])
    assert 'conclavium_attestation_verifications_total{outcome="error",platform="tdx"} 2.0' in text
    assert 'conclavium_attestation_collateral_fetches_total{outcome="error",source="pcs"}' in text
    status, doc = await _post(
        services["none"], "/v1/attestation/collateral", {"platform": "tdx", "evidence": b64(v.quote)}
    )
    assert status == 503 and doc["error"]["code"] == "collateral_source_unconfigured"
    for bad in (
        {"platform": "virtual", "evidence": b64(b"{}")},
        {"platform": "tdx", "evidence": "!"},
        {"platform": "tdx", "evidence": b64(b"junk")},
    ):
        status, doc = await _post(services["tdx"], "/v1/attestation/collateral", bad)
        assert status in (400, 422) and "error" in doc, bad


async def test_verify_fetches_collateral_and_refuses_by_policy_with_422(services: dict[str, str]) -> None:
    v = TDX
    at = v.at.isoformat()
    status, doc = await _post(
        services["tdx"], "/v1/attestation/verify", {"platform": "tdx", "evidence": b64(v.quote), "at": at}
    )
    assert status == 200 and doc["claims"]["status"] == "UpToDate" and "token" in doc
    claims = verify_evidence("tdx", v.quote, collateral=v.collateral, at=v.at)
    policy = accepting(claims)
    policy["trailing_bytes"] = "any"
    key = PrivateKey.generate().public_key.spki
    request = {"platform": "tdx", "evidence": b64(v.quote), "at": at, "policy": policy, "public_keys": [b64(key)]}
    status, doc = await _post(services["tdx"], "/v1/attestation/verify", request)
    assert status == 422, doc
    assert doc["error"]["code"] == "policy_refused" and doc["error"]["check"] == "report_data_binding"
    assert "token" not in doc and doc["policy"]["allowed"] is False
    text = await _metrics(services["tdx"])
    assert 'conclavium_attestation_verifications_total{outcome="refused",platform="tdx"}' in text
    assert VECTORS.is_dir()


async def test_verify_replays_an_event_log(services: dict[str, str]) -> None:
    """/verify passes the TDX event log to the verifier: one that is not the quote's is refused."""
    from tdx_test_log import BootChain

    v = TDX
    request = {
        "platform": "tdx",
        "evidence": b64(v.quote),
        "at": v.at.isoformat(),
        "event_log": b64(BootChain().log()),
    }
    status, doc = await _post(services["tdx"], "/v1/attestation/verify", request)
    assert status == 422 and doc["error"]["check"] == "event_log_replay", doc
    status, doc = await _post(services["tdx"], "/v1/attestation/verify", {**request, "event_log": "!"})
    assert status == 400


async def test_executor_collateral_client(services: dict[str, str]) -> None:
    """What a joining executor does with the service (services/executor/attest.py)."""
    from conclavium.attestation.providers import ProviderError
    from services.executor.attest import fetch_collateral

    certs, col = await asyncio.to_thread(fetch_collateral, services["tdx"], "tdx", TDX.quote)
    assert certs == {} and verify_evidence("tdx", TDX.quote, collateral=col, at=TDX.at).status == "UpToDate"
    v = SNP["milan-v2-virtee"]
    certs, col = await asyncio.to_thread(fetch_collateral, services["tdx"], "snp", v.report)
    verify_evidence("snp", v.report, certs=list(certs.values()), at=v.at)
    assert set(col) == {"amd_crl.der"}
    only, col = await asyncio.to_thread(
        lambda: fetch_collateral(services["tdx"], "snp", v.report, parts=["crl"], product="Milan")
    )
    assert only == {} and set(col) == {"amd_crl.der"}
    with pytest.raises(ProviderError, match="collateral_unavailable"):
        await asyncio.to_thread(fetch_collateral, services["tdx"], "tdx", UNSERVED_TDX.quote)
    with pytest.raises(ProviderError, match="unreachable"):
        await asyncio.to_thread(fetch_collateral, f"http://127.0.0.1:{free_port()}", "tdx", TDX.quote)
