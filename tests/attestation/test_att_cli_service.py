"""The `attestation verify` CLI and the attestation service as real processes (HTTP, NATS, Redis)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import pytest
from att_vectors import VECTORS

from conclavium.crypto.keys import PrivateKey, PublicKey
from conclavium.local.processes import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
SNP_DIR = VECTORS / "snp" / "milan-v2-trustee"
TDX_DIR = VECTORS / "tdx" / "v4-dcapqvl"
TDX_AT = "2025-06-19T12:00:00Z"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conclavium.cli.attestation", "verify", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_cli_exit_codes(tmp_path: Path) -> None:
    ok = cli(
        str(TDX_DIR / "quote.bin"), "--platform", "tdx", "--collateral", str(TDX_DIR / "collateral"), "--at", TDX_AT
    )
    assert ok.returncode == 0, ok.stderr
    claims = json.loads(ok.stdout)
    assert claims["status"] == "UpToDate" and claims["measurement"] == claims["measurement"].lower()

    bad = tmp_path / "quote.bin"
    data = bytearray((TDX_DIR / "quote.bin").read_bytes())
    data[600] ^= 1
    bad.write_bytes(bytes(data))
    fail = cli(str(bad), "--platform", "tdx", "--at", TDX_AT)
    assert fail.returncode == 1
    assert json.loads(fail.stderr)["error"]["check"] == "quote_signed_by_attestation_key"

    wrong = cli(
        str(SNP_DIR / "report.bin"),
        "--platform",
        "snp",
        "--certs",
        str(VECTORS / "snp/milan-v2-virtee"),
        "--at",
        "2025-06-01T00:00:00Z",
    )
    assert wrong.returncode == 1 and "report_signature" in wrong.stderr

    snp = json.loads((SNP_DIR / "expected.json").read_text())["report"]
    policy = tmp_path / "policy.json"
    policy.write_text(
        json.dumps(
            {
                "measurements": [snp["measurement"]],
                "minimum_tcb": {"Milan": {"snp": 0}},
                "snp": {"host_data": [snp["host_data"]], "family_id": "any", "image_id": "any"},
            }
        )
    )
    args = [
        str(SNP_DIR / "report.bin"),
        "--platform",
        "snp",
        "--certs",
        str(SNP_DIR),
        "--at",
        "2025-06-01T00:00:00Z",
        "--policy",
        str(policy),
    ]
    # The recorded report has no AMD CRL: production refuses it for that (exit 3), development accepts.
    no_crl = cli(*args, "--report-data", snp["report_data"][:64])
    assert no_crl.returncode == 3 and json.loads(no_crl.stderr)["error"]["check"] == "collateral_missing"
    dev = tmp_path / "dev.json"
    dev.write_text(json.dumps({**json.loads(policy.read_text()), "environment": "development"}))
    args[-1] = str(dev)
    accepted = cli(*args, "--report-data", snp["report_data"][:64])
    assert accepted.returncode == 0, accepted.stderr
    assert json.loads(accepted.stdout)["policy"]["allowed"] is True
    key = tmp_path / "node.pem"
    key.write_text(PrivateKey.generate().public_key.pem)
    refused = cli(*args, "--public-key", str(key))
    assert refused.returncode == 3 and "report_data_binding" in refused.stderr

    virtual = tmp_path / "virtual.json"
    virtual.write_text(json.dumps({"platform": "virtual", "measurement": "00", "host_data": "", "report_data": ""}))
    assert cli(str(virtual), "--platform", "virtual", "--at", TDX_AT).returncode == 1
    prod = tmp_path / "prod.json"
    prod.write_text(json.dumps({"environment": "production", "platforms": ["virtual"]}))
    assert cli(str(virtual), "--platform", "virtual", "--policy", str(prod)).returncode == 2
    assert cli(str(tmp_path / "missing.bin"), "--platform", "snp").returncode == 2


def test_cli_event_log(tmp_path: Path) -> None:
    """--event-log replays a TDX event log; the built log is not the recorded quote's (exit 1)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from tdx_test_log import BootChain

    log = tmp_path / "ccel.bin"
    log.write_bytes(BootChain().log())
    args = [str(TDX_DIR / "quote.bin"), "--platform", "tdx", "--collateral", str(TDX_DIR / "collateral")]
    refused = cli(*args, "--at", TDX_AT, "--event-log", str(log))
    assert refused.returncode == 1 and json.loads(refused.stderr)["error"]["check"] == "event_log_replay"
    log.write_bytes(b"not a log")
    bad = cli(*args, "--at", TDX_AT, "--event-log", str(log))
    assert bad.returncode == 1 and json.loads(bad.stderr)["error"]["check"] == "event_log_format"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, nats_url: str, redis_url: str) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("svc")
    port = free_port()
    key_path = tmp / "service.pem"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.attestation.main",
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(port),
            "--nats-url",
            nats_url,
            "--redis-url",
            redis_url,
            "--key",
            str(key_path),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, 20, proc)
        yield {
            "url": f"http://127.0.0.1:{port}",
            "key": PrivateKey.from_file(str(key_path)).public_key,
            "nats": nats_url,
        }
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def verify_jwt(token: str, key: PublicKey) -> dict:
    def dec(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, payload, sig = token.split(".")
    assert json.loads(dec(header))["alg"] == "EdDSA"
    assert key.verify(dec(sig), f"{header}.{payload}".encode())
    return json.loads(dec(payload))


def tdx_request(**extra: object) -> dict:
    collateral = {
        f.name: base64.b64encode(f.read_bytes()).decode()
        for f in (TDX_DIR / "collateral").iterdir()
        if f.name != "source_collateral.json"
    }
    req = {
        "platform": "tdx",
        "evidence": base64.b64encode((TDX_DIR / "quote.bin").read_bytes()).decode(),
        "collateral": collateral,
        "at": TDX_AT,
    }
    req.update(extra)
    return req


async def test_service_http(service: dict) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(service["url"] + "/v1/attestation/verify", json=tdx_request()) as r:
            assert r.status == 200
            doc = await r.json()
        payload = verify_jwt(doc["token"], service["key"])
        assert payload["claims"] == doc["claims"] and doc["claims"]["status"] == "UpToDate"
        assert payload["verified_at"] == "2025-06-19T12:00:00Z"
        ref = doc["collateral_ref"]
        cached = tdx_request(collateral_ref=ref)
        del cached["collateral"]
        async with http.post(service["url"] + "/v1/attestation/verify", json=cached) as r:
            assert r.status == 200 and (await r.json())["claims"]["status"] == "UpToDate"

        async with http.post(service["url"] + "/v1/attestation/verify", data=b"{not json") as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_request"
        async with http.post(service["url"] + "/v1/attestation/verify", json={"platform": "tdx", "evidence": "!"}) as r:
            assert r.status == 400
        async with http.post(service["url"] + "/v1/attestation/verify", data=b"x" * (3 * 1024 * 1024)) as r:
            assert r.status == 413 and (await r.json())["error"]["code"] == "too_large"
        flipped = bytearray((TDX_DIR / "quote.bin").read_bytes())
        flipped[600] ^= 1
        async with http.post(
            service["url"] + "/v1/attestation/verify",
            json=tdx_request(evidence=base64.b64encode(bytes(flipped)).decode()),
        ) as r:
            assert r.status == 422
            err = (await r.json())["error"]
            assert err["code"] == "evidence_refused" and err["check"] == "quote_signed_by_attestation_key"
        async with http.post(
            service["url"] + "/v1/attestation/verify",
            json={"platform": "virtual", "evidence": base64.b64encode(b"{}").decode()},
        ) as r:
            assert r.status == 422 and (await r.json())["error"]["check"] == "virtual_not_allowed"
        for path in ("/healthz", "/readyz"):
            async with http.get(service["url"] + path) as r:
                assert r.status == 200
        async with http.get(service["url"] + "/metrics") as r:
            text = await r.text()
        assert 'conclavium_attestation_verifications_total{outcome="verified",platform="tdx"}' in text
        assert 'outcome="refused",platform="tdx"' in text
        assert "conclavium_attestation_verify_seconds_bucket" in text


async def test_service_nats_request_reply(service: dict) -> None:
    nc = await nats.connect(service["nats"])
    try:
        msg = await nc.request("conclavium.attestation.verify", json.dumps(tdx_request()).encode(), timeout=10)
        doc = json.loads(msg.data)
        assert doc["status"] == 200
        assert verify_jwt(doc["token"], service["key"])["claims"]["measurement"] == doc["claims"]["measurement"]
        msg = await nc.request("conclavium.attestation.verify", b"[]", timeout=10)
        assert json.loads(msg.data)["status"] == 400
    finally:
        await nc.close()
