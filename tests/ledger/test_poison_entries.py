"""What one signed request or one malicious sequencer could use to halt or fool every executor,
through real processes: values outside the value domain are refused by the gateway with a 400 and,
ordered anyway, are Invalid on every executor while the ledger keeps committing; a block that
reuses a genuine signature for a forged body does not execute the forgery."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest
from ledger_support import (
    agreeing_roots,
    raw_post,
    status_everywhere,
    user_keys,
)
from rogue_sequencer import append_entries_after_tip

from conclavium import node_messages
from conclavium.attestation import expected_report_data, make_virtual_evidence
from conclavium.block import Entry, Kind
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e, dumps
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client, ClientError
from conclavium.tx import make_body, sign

POISON = {
    "int_above_2_64": (b"100000000000000000000000", "int_out_of_range"),
    "int_above_2_53": (b"9007199254740993", "int_out_of_range"),
    "objects_400_deep": (b'{"a":' * 400 + b"1" + b"}" * 400, "too_deep"),
    "lists_5000_deep": (b"[" * 5000 + b"]" * 5000, "too_deep"),
}


def _signed_raw(net: LocalNetwork, key: PrivateKey, value_json: bytes, tag: str) -> tuple[bytes, bytes]:
    """A transaction putting `value_json` (raw JSON the SDK would refuse to build), signed."""
    op = b'{"key":' + dumps(tag) + b',"map":"public:poison","op":"put","value":' + value_json + b"}"
    body = (
        b'{"app":"kv","ledger":' + dumps(net.opt.ledger) + b',"nonce":' + dumps(f"{tag}-{time.time_ns()}")
        + b',"ops":[' + op + b'],"sender":' + dumps(key.key_id) + b',"ts":' + str(int(time.time() * 1000)).encode()
        + b',"v":1}'
    )
    return body, key.sign(body)


def _form(body: bytes, signature: bytes) -> dict[str, str]:
    return {"body": base64.b64encode(body).decode(), "signature": base64.b64encode(signature).decode()}


@pytest.mark.parametrize("case", sorted(POISON))
async def test_gateway_refuses_values_outside_the_domain(network: LocalNetwork, case: str) -> None:
    value, code = POISON[case]
    body, sig = _signed_raw(network, user_keys(network)[0], value, case)
    status, payload = await raw_post(f"{network.gateway_url}/v1/transactions", dumps(_form(body, sig)))
    assert (status, payload["error"]["code"]) == (400, code), payload
    status, payload = await raw_post(
        f"{network.gateway_url}/v1/transactions/batch", dumps({"transactions": [_form(body, sig)]})
    )
    assert (status, payload["error"]["code"]) == (400, code), payload
    assert payload["error"]["message"].startswith("transaction 0: ")


async def test_poison_ordered_anyway_is_invalid_everywhere_and_the_ledger_goes_on(network: LocalNetwork) -> None:
    key = user_keys(network)[0]
    poison = {case: _signed_raw(network, key, value, case) for case, (value, _) in POISON.items()}
    await append_entries_after_tip(network, [Entry(Kind.TX, body, sig) for body, sig in poison.values()])
    for case, (body, _) in poison.items():
        answers = await status_everywhere(network, hashlib.sha256(body).hexdigest(), "Invalid")
        reasons = {name: (a.get("status"), a.get("reason")) for name, a in answers.items()}
        assert set(reasons.values()) == {("Invalid", POISON[case][1])}, (case, reasons)
    c = Client(network.gateway_url, key)
    try:
        h = await c.put("public:poison", "after", "still committing")
        assert (await c.wait(h, timeout=30))["status"] == "Committed"
        assert await c.get("public:poison", "after") == "still committing"
        for case in POISON:
            with pytest.raises(ClientError) as e:
                await c.get("public:poison", case)
            assert e.value.code == "not_found"
    finally:
        await c.close()
    await agreeing_roots(network)


async def test_a_forged_body_with_a_genuine_signature_does_not_execute(network: LocalNetwork) -> None:
    """The sequencer orders [(D' with sender X, X's signature over D), (D, the same signature)]:
    D' is Invalid (bad_signature) on every executor, D executes, and the executors agree."""
    key = user_keys(network)[0]
    ops = [{"op": "put", "map": "public:forgery", "key": "amount", "value": 100}]
    genuine = sign(key, make_body(network.opt.ledger, key.key_id, ops, int(time.time() * 1000)))
    forged = genuine.body.replace(b'"value":100', b'"value":999')
    assert forged != genuine.body
    await append_entries_after_tip(
        network, [Entry(Kind.TX, forged, genuine.signature), Entry(Kind.TX, genuine.body, genuine.signature)]
    )
    answers = await status_everywhere(network, hashlib.sha256(forged).hexdigest(), "Invalid")
    assert {(a.get("status"), a.get("reason")) for a in answers.values()} == {("Invalid", "bad_signature")}, answers
    c = Client(network.gateway_url, key)
    try:
        assert (await c.wait(genuine.hash.hex(), timeout=30))["status"] == "Committed"
        assert await c.get("public:forgery", "amount") == 100
        h = await c.put("public:forgery", "after", 1)
        assert (await c.wait(h, timeout=30))["status"] == "Committed"
    finally:
        await c.close()
    answers = await status_everywhere(network, genuine.hash.hex(), "Committed")
    assert {a["status"] for a in answers.values()} == {"Committed"}, answers
    await agreeing_roots(network)


async def test_a_node_message_that_trips_the_executor_is_invalid_and_the_ledger_goes_on(
    network: LocalNetwork,
) -> None:
    """A join whose evidence has the wrong shape (certificates as a list) once raised out of block
    application on every executor; whatever the reason it is refused with, it is refused, the same
    everywhere, and the next transaction commits."""
    key, enc = PrivateKey.generate(), sealing.generate_key()
    enc_raw = sealing.public_bytes(enc)
    bound = node_messages.bound_keys(key.public_key.spki, enc_raw)
    measurement = bytes.fromhex(node_messages.VIRTUAL_DEV_MEASUREMENT)
    evidence = make_virtual_evidence(measurement, b"", expected_report_data(bound))
    info = node_messages.NodeInfo(
        id=key.key_id,
        signing_key=key.public_key.pem,
        encryption_key=enc_raw.hex(),
        evidence={"platform": "virtual", "evidence": b64e(evidence), "certs": ["not", "a", "map"]},
        name="odd-shape",
    )
    msg = node_messages.Join(v=1, ledger=network.opt.ledger, ts=int(time.time() * 1000), node=info)
    entry = node_messages.make_entry(msg, key)
    await append_entries_after_tip(network, [entry])
    answers = await status_everywhere(network, hashlib.sha256(entry.data).hexdigest(), "Invalid")
    assert len({(a.get("status"), a.get("reason"), a.get("message")) for a in answers.values()}) == 1, answers
    assert {a.get("status") for a in answers.values()} == {"Invalid"}, answers
    c = Client(network.gateway_url, user_keys(network)[0])
    try:
        h = await c.put("public:poison", "after-join", 1)
        assert (await c.wait(h, timeout=30))["status"] == "Committed"
    finally:
        await c.close()
    await agreeing_roots(network)
