"""Fuzz target for the gateway's request parsing (hypothesis), through aiohttp's test client
against a real gateway application on a real NATS server (JetStream).

Requests mix every route and method with bodies that are random bytes, random JSON, transactions
whose body is valid, mutated, or carries values past the value domain's limits (huge integers,
deep nesting, lone surrogates, NaN), batches of those, and COSE governance documents raw or in
JSON, under several content types. Every answer must be a clear one: never a 500; a 4xx or 503
carries a JSON error with a machine-readable code and a message.

Time budget (marker `fuzz`, deselect with `-m "not fuzz"`): 300 requests, about 15 s on one core;
CONCLAVIUM_FUZZ_SCALE=10 sends ten times as many.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conclavium.crypto.keys import PrivateKey
from conclavium.governance import documents
from conclavium.tx import make_body, sign
from services.gateway.app import Gateway, GatewayConfig

pytestmark = pytest.mark.fuzz
FUZZ_SCALE = int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1"))
LEDGER = "fuzz"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
KEY = PrivateKey.generate()
HEX = "ab" * 32

structures = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=10,
)


def _nested(depth: int, kind: str) -> bytes:
    return b"[" * depth + b"1" + b"]" * depth if kind == "list" else b'{"a":' * depth + b"1" + b"}" * depth


hostile = st.one_of(
    st.sampled_from(
        [b"18446744073709551616", b"-9223372036854775809", b"1e400", b"NaN", b'"\\ud800"', b'"\xed\xa0\x80"', b"0.1"]
    ),
    st.integers(-(2**90), 2**90).map(lambda i: str(i).encode()),
    st.builds(_nested, st.sampled_from([32, 64, 65, 400, 1100, 5000]), st.sampled_from(["list", "obj"])),
)


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@st.composite
def tx_bodies(draw: Any) -> bytes:
    ops = [{"op": "put", "map": draw(st.sampled_from(["public:t", "t", "bad map"])), "key": "k", "value": "@@"}]
    body = make_body(draw(st.sampled_from([LEDGER, LEDGER, "other"])), KEY.key_id, ops, 1_700_000_000_000, "00")
    how = draw(st.sampled_from(["hostile", "hostile", "value", "cut", "bytes"]))
    if how == "hostile":
        return body.replace(b'"@@"', draw(hostile))
    if how == "value":
        return body.replace(b'"@@"', json.dumps(draw(structures)).encode())
    if how == "cut":
        return body[: draw(st.integers(0, len(body)))]
    return draw(st.binary(max_size=120))


@st.composite
def transactions(draw: Any) -> Any:
    body = draw(tx_bodies())
    sig = sign(KEY, body).signature
    return draw(
        st.sampled_from(
            [
                {"body": _b64(body), "signature": _b64(sig)},
                {"body": _b64(body), "signature": "***"},
                {"body": _b64(body)},
                {"body": _b64(body), "signature": _b64(sig), "extra": 1},
            ]
        )
        | structures
    )


def _doc(kind: str, pid: str, ledger: str) -> bytes:
    if kind == "proposal":
        return documents.make_proposal([{"name": "open_service", "args": {}}], KEY, 1_700_000_000, ledger=ledger)
    if kind == "ballot":
        return documents.make_ballot(pid, True, KEY, 1_700_000_000, ledger=ledger)
    return documents.make_withdrawal(pid, KEY, 1_700_000_000, ledger=ledger)


@st.composite
def cose_documents(draw: Any) -> bytes:
    doc = _doc(draw(st.sampled_from(["proposal", "ballot", "withdrawal"])), HEX, LEDGER)
    how = draw(st.sampled_from(["valid", "flip", "cut", "bytes"]))
    if how == "flip":
        i = draw(st.integers(0, len(doc) - 1))
        return doc[:i] + bytes([doc[i] ^ draw(st.integers(1, 255))]) + doc[i + 1 :]
    if how == "cut":
        return doc[: draw(st.integers(0, len(doc) - 1))]
    if how == "bytes":
        return draw(st.binary(max_size=100))
    return doc


segments = st.sampled_from([HEX, HEX.upper(), "x", "", "%00", "..", "a" * 300]) | st.text(max_size=20).map(
    lambda s: quote(s, safe="")
)
ROUTES = [
    ("POST", "/v1/transactions"),
    ("POST", "/v1/transactions/batch"),
    ("GET", "/v1/transactions/{}"),
    ("GET", "/v1/transactions/{}/receipt"),
    ("GET", "/v1/state/{}/{}"),
    ("POST", "/v1/queries"),
    ("GET", "/v1/service"),
    ("POST", "/v1/gov/proposals"),
    ("POST", "/v1/gov/proposals/{}/ballots"),
    ("POST", "/v1/gov/proposals/{}/withdraw"),
    ("GET", "/v1/gov/proposals"),
    ("GET", "/v1/gov/proposals/{}"),
    ("GET", "/v1/gov/constitution"),
    ("GET", "/v1/gov/members"),
    ("GET", "/v1/nodes/{}/attestation"),
    ("GET", "/openapi.json"),
    ("GET", "/healthz"),
    ("GET", "/nowhere/{}"),
]


@st.composite
def requests(draw: Any) -> tuple[str, str, bytes, dict[str, str]]:
    method, template = draw(st.sampled_from(ROUTES))
    if draw(st.integers(0, 5)) == 0:
        method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    path = template.format(*(draw(segments) for _ in range(template.count("{}"))))
    if draw(st.booleans()):
        path += "?" + draw(
            st.sampled_from(
                [
                    "min_height=5",
                    "min_height=-1",
                    "min_height=99999999999999999999",
                    "min_height=%C2%B2",
                    "state=Open",
                    "state=%00",
                    "x=%ff",
                ]
            )
        )
    kind = draw(st.sampled_from(["tx", "batch", "cose", "cose_json", "json", "bytes", "none"]))
    ctype = "application/json"
    if kind == "tx":
        body = json.dumps(draw(transactions())).encode()
    elif kind == "batch":
        items = draw(st.lists(transactions(), max_size=4))
        body = json.dumps(draw(st.sampled_from([{"transactions": items}, {"transactions": {}}, items]))).encode()
    elif kind == "cose":
        body, ctype = draw(cose_documents()), "application/cose"
    elif kind == "cose_json":
        body = json.dumps(
            draw(st.sampled_from([{"document": _b64(draw(cose_documents()))}, {"document": 5}, {}]))
        ).encode()
    elif kind == "json":
        body = draw(st.one_of(structures.map(lambda v: json.dumps(v).encode()), hostile))
    elif kind == "bytes":
        body = draw(st.binary(max_size=200))
    else:
        body = b""
    ctype = draw(st.sampled_from([ctype, ctype, "text/plain", "application/json; charset=utf-8", ""]))
    return method, path, body, ({"Content-Type": ctype} if ctype else {})


@pytest.fixture(scope="module")
def gateway(nats_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient]]:
    """A gateway application on a loop of its own, so that hypothesis can drive it from a plain test."""
    loop = asyncio.new_event_loop()

    async def start() -> TestClient:
        gw = Gateway(GatewayConfig(ledger=LEDGER, nats_url=nats_url, query_timeout_s=0.2, max_uncommitted=0))
        client = TestClient(TestServer(gw.build_app()))
        await client.start_server()
        return client

    client = loop.run_until_complete(start())
    yield loop, client
    loop.run_until_complete(client.close())
    loop.close()


async def _send(client: TestClient, req: tuple[str, str, bytes, dict[str, str]]) -> tuple[int, bytes, str]:
    method, path, body, headers = req
    async with client.request(method, path, data=body, headers=headers, skip_auto_headers=["Content-Type"]) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


@settings(
    max_examples=300 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    print_blob=True,
)
@given(req=requests())
def test_gateway_answers_every_request_clearly(gateway: tuple[asyncio.AbstractEventLoop, TestClient], req: Any) -> None:
    loop, client = gateway
    status, raw, ctype = loop.run_until_complete(_send(client, req))
    assert status != 500 and status < 600, (status, raw[:300])
    if status >= 500:
        assert status == 503, (status, raw[:300])
    if status >= 400 and req[0] != "HEAD":
        assert ctype.startswith("application/json"), (status, ctype)
        err = json.loads(raw)["error"]
        assert CODE.match(err["code"]) and isinstance(err["message"], str) and err["message"], err
    if status == 202 and req[1].startswith("/v1/transactions"):
        answer = json.loads(raw)
        assert "tx_hash" in answer or "tx_hashes" in answer, answer


def test_gateway_fuzz_reaches_the_intake(gateway: tuple[asyncio.AbstractEventLoop, TestClient]) -> None:
    """The target is live: a well-formed transaction is accepted (so the fuzzer reaches past parsing)."""
    loop, client = gateway
    body = make_body(LEDGER, KEY.key_id, [{"op": "put", "map": "public:t", "key": "k", "value": 1}], 0, "00")
    tx = json.dumps(sign(KEY, body).to_json()).encode()
    status, raw, _ = loop.run_until_complete(
        _send(client, ("POST", "/v1/transactions", tx, {"Content-Type": "application/json"}))
    )
    assert status == 202, raw
    assert json.loads(raw)["tx_hash"] == hashlib.sha256(body).hexdigest()
