"""The gateway's OpenAPI document against the gateway itself: every route documented, every
wrong method answered 405 with `Allow`, and a schemathesis run with all checks against a live
local network (real NATS, Redis, sequencer, executors and gateway)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client
from services.gateway import app as gateway_app
from services.gateway import openapi
from services.gateway.app import Gateway, GatewayConfig, route_table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# The run's bounds: examples per operation and phase, and a hard wall-clock limit.
MAX_EXAMPLES = 15
TIME_BUDGET_S = 480
KNOWN_KEY = "known"


def _app() -> tuple[Gateway, web.Application]:
    gw = Gateway(GatewayConfig(ledger="local", nats_url="nats://127.0.0.1:1"))
    return gw, gw.build_app()


def test_document_covers_exactly_the_routes() -> None:
    gw, app = _app()
    assert openapi.undocumented(route_table(app)) == ([], [])
    served = {(m, p) for m, p in route_table(app) if m != "HEAD"}
    documented = {(m.upper(), p) for p, ops in gw.openapi["paths"].items() for m in ops}
    assert documented == served
    assert openapi.MAX_BATCH == gateway_app.MAX_BATCH


def test_a_route_without_an_entry_fails_the_build() -> None:
    _, app = _app()
    routes = [*route_table(app), ("GET", "/v1/new-thing")]
    with pytest.raises(ValueError, match=r"undocumented.*GET /v1/new-thing"):
        openapi.openapi_document(routes)
    without = [r for r in route_table(app) if r != ("GET", "/healthz")]
    with pytest.raises(ValueError, match=r"documented but not served.*GET /healthz"):
        openapi.openapi_document(without)


# Sawtooth's REST paths answer with Sawtooth's own error body (its clients read its integer codes;
# a wrong content type is its 400 code 42), except for the gateway's shared refusals (413, 503 busy).
SAWTOOTH_PATHS = (
    "/batches",
    "/batch_statuses",
    "/state",
    "/state/{address}",
    "/batches/{id}",
    "/blocks",
    "/blocks/{id}",
    "/transactions",
    "/transactions/{id}",
    "/receipts",
)


def test_every_operation_documents_its_errors_with_the_error_body() -> None:
    gw, _ = _app()
    for path, ops in gw.openapi["paths"].items():
        for method, op in ops.items():
            responses = op["responses"]
            assert "405" in responses and "Allow" in responses["405"]["headers"], (method, path)
            if "requestBody" in op:
                wanted = {"400", "413"} if path in SAWTOOTH_PATHS else {"400", "413", "415"}
                assert wanted <= responses.keys(), (method, path)
            for status, response in responses.items():
                if status.startswith(("4", "5")) and path != "/readyz":
                    schema = response["content"]["application/json"]["schema"]
                    bodies = [{"$ref": "#/components/schemas/Error"}]
                    if path in SAWTOOTH_PATHS and status not in ("405", "413"):
                        bodies = [{"$ref": "#/components/schemas/SawtoothError"}]
                        if (method, path, status) == ("post", "/batches", "503"):
                            # the gateway's own (overloaded, intake unavailable) or Sawtooth's 31
                            # (too many batches held for their TPs)
                            either = ["#/components/schemas/Error", "#/components/schemas/SawtoothError"]
                            bodies = [{"oneOf": [{"$ref": e} for e in either]}]
                    assert schema in bodies, (method, path, status)
                if status == "503" and path != "/readyz":
                    assert "Retry-After" in response["headers"], (method, path)


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda m: "public:x" if m.group(0) == "{map}" else "ab" * 32, path)


async def test_wrong_method_answers_405_with_allow(network: LocalNetwork) -> None:
    doc_paths = openapi.openapi_document(route_table(_app()[1]))["paths"]
    async with aiohttp.ClientSession() as s:
        for path, ops in doc_paths.items():
            declared = {m.upper() for m in ops}
            for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE", "TRACE", "OPTIONS"} - declared):
                async with s.request(method, network.gateway_url + _concrete(path)) as r:
                    assert r.status == 405, (method, path, r.status)
                    allow = {a.strip() for a in r.headers.get("Allow", "").split(",") if a.strip()}
                    assert allow - {"HEAD"} == declared, (method, path, r.headers.get("Allow"))
                    body = await r.json()
                    assert body["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1/gov/proposals?state=Nonsense", None, 400, "invalid_state"),
        ("GET", "/v1/state/bad%20map!/k", None, 400, "invalid_map"),
        ("GET", f"/v1/state/public:x/{'k' * 513}", None, 400, "invalid_key"),
        # beyond aiohttp's default 8190-byte request line (what the fuzzer once sent): still JSON
        ("GET", f"/v1/state/public:x/{'%C2%B4' * 2000}", None, 400, "invalid_key"),
        ("GET", "/v1/state/public:x/k?min_height=-1", None, 400, "invalid_min_height"),
        ("GET", f"/v1/state/public:x/k?min_height={'9' * 5000}", None, 400, "invalid_min_height"),
        ("GET", f"/v1/state/public:x/k?min_height={2**63}", None, 400, "invalid_min_height"),
        ("GET", f"/v1/state/public:x/k?min_height={2**62}", None, 409, "ahead_of_ledger"),
        ("POST", "/v1/queries", {"body": "e30=", "signature": "", "min_height": -3}, 400, "invalid_min_height"),
        ("POST", "/v1/queries", {"body": "e30=", "signature": "", "min_height": "1"}, 400, "invalid_min_height"),
        ("GET", "/v1/transactions/batch", None, 405, "method_not_allowed"),
        ("GET", "/v1/transactions/nothex", None, 400, "invalid_hash"),
    ],
)
async def test_read_parameters_get_clear_errors(
    network: LocalNetwork, method: str, path: str, body: dict | None, status: int, code: str
) -> None:
    async with aiohttp.ClientSession() as s, s.request(method, network.gateway_url + path, json=body) as r:
        payload = await r.json()
        assert (r.status, payload["error"]["code"]) == (status, code), payload
        if status == 405:
            assert r.headers["Allow"] == "POST"


async def _write_known(net: LocalNetwork) -> str:
    """One committed transaction writing KNOWN_KEY in a private and a public map, so that reads,
    queries and receipts in the run also reach their 200 answers; returns its hash."""
    ops = [{"op": "put", "map": m, "key": KNOWN_KEY, "value": {"n": 1}} for m in ("conformance", "public:conformance")]
    async with Client(
        net.gateway_url,
        PrivateKey.from_file(str(net.dir / net.users[0]["key"])),
        **net.trust(),
    ) as c:
        h = await c.submit(await c.build(ops))
        assert (await c.wait(h))["status"] == "Committed"
    return h


@pytest.mark.slow
@pytest.mark.timeout(TIME_BUDGET_S + 120)  # beyond pytest's default 300 s: the budget, plus set-up
def test_schemathesis_all_checks_against_live_gateway(network: LocalNetwork, tmp_path: Path) -> None:
    """Schemathesis with every check (`--checks all`) against the live gateway: coverage, fuzzing
    and stateful phases, at most 15 examples per operation and phase, one worker. Time budget:
    8 minutes (the subprocess is killed at 480 s). With the Sawtooth operations it took 235 s on
    the shared 2-core machine; with 25 operations, more than 180 s on a quiet one (coverage 45 s,
    fuzzing 87 s, then the stateful phase), most of it reads with a `min_height` ahead of the
    ledger, each answered after the gateway's 3 s read-your-writes wait.

    Positive data is made genuine by tests/api/schemathesis_hooks.py (signed bodies, COSE
    documents, a ballot naming the proposal of its URL); the accepted statuses are in
    tests/api/schemathesis.toml, stricter than the defaults. Every check applies; none is
    excluded. Skip locally with `-m "not slow"`."""
    env = {
        **os.environ,
        "CONCLAVIUM_ST_NET": str(network.dir),
        "CONCLAVIUM_ST_KNOWN": f"{asyncio.run(_write_known(network))} {KNOWN_KEY}",
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "--no-color",
        "run",
        f"{network.gateway_url}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--workers",
        "1",  # hypothesis' lambda descriptions call ast.parse, which is not thread-safe on 3.11
        "--generation-database",
        "none",
        "--request-timeout",
        "10",
        "--no-shrink",
        # The JSON-RPC WebSocket refuses plain HTTP by design (400 websocket_required), and an
        # upgraded socket is no HTTP exchange: tests/eth/test_websocket.py tests it with real clients.
        "--exclude-name",
        "GET /rpc",
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIME_BUDGET_S, check=False
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"schemathesis exceeded its {TIME_BUDGET_S} s budget\n{out[-4000:]}")
    elapsed = time.monotonic() - t0
    report = "\n".join(line[:300] for line in (proc.stdout + proc.stderr).splitlines())
    assert proc.returncode == 0, f"schemathesis found failures ({elapsed:.0f} s):\n{report[-20000:]}"
    # every operation but the document's own (schemathesis leaves /openapi.json out) and the
    # WebSocket was tested
    operations = sum(len(ops) for ops in _app()[0].openapi["paths"].values()) - 2
    assert re.search(rf"Selected: +{operations}/{operations + 1}\b", report), report[-3000:]
    assert re.search(rf"Tested: +{operations}\b", report), report[-3000:]
    print(f"schemathesis: {elapsed:.0f} s\n{report[-1500:]}")
