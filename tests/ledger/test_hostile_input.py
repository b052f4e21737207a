"""Hostile and malformed input: every case gets a clear error (status + machine-readable code) at
the gateway or an Invalid status with the reason, and nothing reaches the state."""

from __future__ import annotations

import base64
import json
import time

import pytest
from ledger_support import raw_get, raw_post, user_keys

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import SignedTx, make_body, sign


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "invalid_json"),
        ('{"body": "x"}', "text/plain", 415, "unsupported_media_type"),
        ("[]", "application/json", 400, "invalid_body"),
        ('{"body": "aGk="}', "application/json", 400, "missing_field"),
        ('{"body": "***", "signature": "AAAA"}', "application/json", 400, "invalid_encoding"),
        (json.dumps({"body": _b64(b"not json"), "signature": "AAAA"}), "application/json", 400, "invalid_body"),
        (json.dumps({"body": _b64(b'{"v":1}'), "signature": "AAAA"}), "application/json", 400, "invalid_body"),
        ("x" * 300_000, "application/json", 413, "too_large"),
    ],
)
async def test_malformed_submissions_get_clear_errors(
    network: LocalNetwork, body: str, content_type: str, status: int, code: str
) -> None:
    got_status, payload = await raw_post(f"{network.gateway_url}/v1/transactions", body, content_type)
    assert (got_status, payload["error"]["code"]) == (status, code), payload
    assert payload["error"]["message"]


async def test_oversize_batch_and_bad_batch_items(network: LocalNetwork) -> None:
    status, payload = await raw_post(f"{network.gateway_url}/v1/transactions/batch", "x" * (17 * 1024 * 1024))
    assert status == 413 and payload["error"]["code"] == "too_large"
    key = user_keys(network)[0]
    good = sign(key, make_body("local", key.key_id, [{"op": "put", "map": "public:h", "key": "a", "value": 1}], 0))
    batch = {"transactions": [good.to_json(), {"body": "@@", "signature": "AA=="}]}
    status, payload = await raw_post(f"{network.gateway_url}/v1/transactions/batch", json.dumps(batch))
    assert status == 400 and payload["error"]["code"] == "invalid_encoding"
    assert "transaction 1" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("op", "code"),
    [
        ({"op": "put", "map": "bad map!", "key": "k", "value": 1}, "invalid_map"),
        ({"op": "put", "map": "public:gov.members", "key": "k", "value": 1}, "reserved_map"),
        ({"op": "put", "map": "public:x", "key": "", "value": 1}, "invalid_key"),
        ({"op": "put", "map": "public:x", "key": "k"}, "invalid_body"),
        ({"op": "drop", "map": "public:x", "key": "k"}, "invalid_body"),
    ],
)
async def test_invalid_operations_refused_at_gateway(network: LocalNetwork, op: dict, code: str) -> None:
    key = user_keys(network)[0]
    tx = sign(key, make_body("local", key.key_id, [op], int(time.time() * 1000)))
    status, payload = await raw_post(f"{network.gateway_url}/v1/transactions", json.dumps(tx.to_json()))
    assert (status, payload["error"]["code"]) == (400, code), payload


async def test_wrong_ledger_refused(network: LocalNetwork) -> None:
    key = user_keys(network)[0]
    tx = sign(key, make_body("other", key.key_id, [{"op": "put", "map": "public:x", "key": "k", "value": 1}], 0))
    status, payload = await raw_post(f"{network.gateway_url}/v1/transactions", json.dumps(tx.to_json()))
    assert (status, payload["error"]["code"]) == (400, "wrong_ledger")


async def _submit_and_wait(net: LocalNetwork, tx: SignedTx) -> dict:
    c = Client(net.gateway_url)
    try:
        return await c.wait(await c.submit(tx))
    finally:
        await c.close()


async def test_bad_signature_unknown_sender_and_stale_are_invalid_without_effect(network: LocalNetwork) -> None:
    key = user_keys(network)[0]
    now = int(time.time() * 1000)
    ops = [{"op": "put", "map": "public:hostile", "key": "victim", "value": "forged"}]
    forged = SignedTx(make_body("local", key.key_id, ops, now), b"\x01" * 64)
    st = await _submit_and_wait(network, forged)
    assert st == {**st, "status": "Invalid", "reason": "bad_signature"}
    stranger = PrivateKey.generate()
    st = await _submit_and_wait(network, sign(stranger, make_body("local", stranger.key_id, ops, now)))
    assert st["status"] == "Invalid" and st["reason"] == "unknown_sender"
    wrong_key = PrivateKey.generate()
    st = await _submit_and_wait(network, sign(wrong_key, make_body("local", key.key_id, ops, now)))
    assert st["status"] == "Invalid" and st["reason"] == "bad_signature"
    st = await _submit_and_wait(network, sign(key, make_body("local", key.key_id, ops, now - 3_600_000)))
    assert st["status"] == "Invalid" and st["reason"] == "expired"
    status, payload, _ = await raw_get(f"{network.gateway_url}/v1/state/public:hostile/victim")
    assert status == 404 and payload["error"]["code"] == "not_found"


async def test_replayed_transaction_is_harmless(network: LocalNetwork) -> None:
    key = user_keys(network)[0]
    c = Client(network.gateway_url, key)
    try:
        tx = await c.build([{"op": "put", "map": "public:replay", "key": "counter", "value": 1}])
        h1 = await c.submit(tx)
        await c.wait(h1)
        first = await c.status(h1)
        h2 = await c.submit(tx)
        h3 = (await c.submit_batch([tx, tx]))[0]
        later = await c.build([{"op": "put", "map": "public:replay", "key": "counter", "value": 2}])
        await c.wait(await c.submit(later))
        assert h1 == h2 == h3
        assert await c.status(h1) == first, "a replay must not change the original's status"
        await c.submit(tx)
        marker = await c.build([{"op": "put", "map": "public:replay", "key": "marker", "value": 1}])
        await c.wait(await c.submit(marker))
        assert await c.get("public:replay", "counter") == 2, "the replay must not be applied again"
    finally:
        await c.close()


async def test_read_side_errors(network: LocalNetwork) -> None:
    url = network.gateway_url
    status, payload, _ = await raw_get(f"{url}/v1/transactions/nothex")
    assert (status, payload["error"]["code"]) == (400, "invalid_hash")
    status, payload, _ = await raw_get(f"{url}/v1/transactions/{'ab' * 32}/receipt")
    assert (status, payload["error"]["code"]) == (404, "not_found")
    status, payload, _ = await raw_get(f"{url}/v1/transactions/{'ab' * 32}")
    assert status == 200 and payload["status"] == "Unknown"
    status, payload, _ = await raw_get(f"{url}/v1/nowhere")
    assert (status, payload["error"]["code"]) == (404, "not_found")
    status, payload = await raw_post(f"{url}/v1/queries", json.dumps({"body": "e30=", "signature": "AA=="}))
    assert status == 400 and payload["error"]["code"] == "invalid_body"
    key = user_keys(network)[0]
    from conclavium import query

    async with Client(network.gateway_url, **network.trust()) as c:
        tx_key = await c.tx_key()
    q, _, _ = query.make(key, "local", "medical", "x", int(time.time() * 1000), tx_key)
    q["signature"] = _b64(b"\x00" * 64)
    status, payload = await raw_post(f"{url}/v1/queries", json.dumps(q))
    assert (status, payload["error"]["code"]) == (401, "bad_signature")
    stale, _, _ = query.make(key, "local", "medical", "x", int(time.time() * 1000) - 600_000, tx_key)
    status, payload = await raw_post(f"{url}/v1/queries", json.dumps(stale))
    assert (status, payload["error"]["code"]) == (401, "stale_query")


async def test_gateway_still_healthy_after_abuse(network: LocalNetwork) -> None:
    status, payload, _ = await raw_get(f"{network.gateway_url}/readyz")
    assert status == 200, payload
    status, doc, _ = await raw_get(f"{network.gateway_url}/openapi.json")
    assert status == 200 and "/v1/transactions" in doc["paths"]
    async with Client(network.gateway_url) as c:
        with pytest.raises(ClientError):
            await c._request("DELETE", "/v1/transactions")
