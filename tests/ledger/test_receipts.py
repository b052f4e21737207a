"""Receipts verify offline with only the service certificate, and any change breaks them."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from ledger_support import service_cert, user_keys

from conclavium import receipt
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e
from conclavium.identity import node_certificate, service_certificate
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


@pytest.fixture(scope="module")
def real_receipt(network: LocalNetwork) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        c = Client(network.gateway_url, user_keys(network)[0])
        try:
            txs = [
                await c.build([{"op": "put", "map": "public:receipts", "key": f"k{i}", "value": i}]) for i in range(8)
            ]
            hashes = await c.submit_batch(txs)
            for h in hashes:
                await c.wait(h)
            r = await c.receipt(hashes[2])
            assert r["path"], "one batch lands in one block, so the path is not empty"
            return r
        finally:
            await c.close()

    return asyncio.run(fetch())


def _flip_hex(value: str, pos: int = 0) -> str:
    b = bytearray(bytes.fromhex(value))
    b[pos] ^= 1
    return b.hex()


def _flip_b64(value: str) -> str:
    b = bytearray(b64d(value))
    b[5] ^= 1
    return b64e(bytes(b))


Mutation = Callable[[dict[str, Any]], None]

MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "tx_hash": (lambda r: r.update(tx_hash=_flip_hex(r["tx_hash"])), "bad_inclusion_proof"),
    "write_digest": (lambda r: r.update(write_digest=_flip_hex(r["write_digest"], 31)), "bad_inclusion_proof"),
    "path": (lambda r: r["path"][0].__setitem__(1, _flip_hex(r["path"][0][1])), "bad_inclusion_proof"),
    "path side": (
        lambda r: r["path"][0].__setitem__(0, "l" if r["path"][0][0] == "r" else "r"),
        "bad_inclusion_proof",
    ),
    "root": (lambda r: r.update(root=_flip_hex(r["root"], 7)), "bad_inclusion_proof"),
    "block_hash": (lambda r: r.update(block_hash=_flip_hex(r["block_hash"])), "bad_signature"),
    "height": (lambda r: r.update(height=r["height"] + 1), "bad_signature"),
    "quorum lowered": (lambda r: r.update(quorum=1), "bad_signature"),
    "ledger": (lambda r: r.update(ledger="other"), "bad_signature"),
    "signature": (
        lambda r: r["signatures"][0].update(signature=_flip_b64(r["signatures"][0]["signature"])),
        "bad_signature",
    ),
    "node id": (lambda r: r["signatures"][0].update(node="00" * 32), "untrusted_node"),
    "certificate": (
        lambda r: r["signatures"][0].update(cert=r["signatures"][0]["cert"].replace("M", "N", 3)),
        "untrusted_node",
    ),
    "signatures dropped": (lambda r: r.update(signatures=r["signatures"][:1]), "insufficient_signatures"),
    "duplicate signer": (lambda r: r.update(signatures=[r["signatures"][0]] * 3), "insufficient_signatures"),
    "garbage": (lambda r: r.update(path="nonsense"), "malformed"),
    "version": (lambda r: r.update(v=2), "malformed"),
}


def test_real_receipt_verifies(network: LocalNetwork, real_receipt: dict[str, Any]) -> None:
    v = receipt.verify(real_receipt, service_cert(network), min_signers=2, tx_hash=real_receipt["tx_hash"])
    assert v.height == real_receipt["height"] and len(v.signers) >= 2


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_any_change_breaks_the_receipt(network: LocalNetwork, real_receipt: dict[str, Any], name: str) -> None:
    mutate, code = MUTATIONS[name]
    r = copy.deepcopy(real_receipt)
    mutate(r)
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, service_cert(network))
    assert e.value.code == code, str(e.value)


def test_signature_from_a_key_the_service_never_endorsed(network: LocalNetwork, real_receipt: dict[str, Any]) -> None:
    """A node certificate issued by another 'service' does not count, even if its signature is good."""
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rogue_service = PrivateKey.generate()
    rogue_cert = service_certificate(rogue_service, "local", now)
    rogue_node = PrivateKey.generate()
    r = copy.deepcopy(real_receipt)
    stmt = receipt.statement(
        r["ledger"], r["height"], bytes.fromhex(r["block_hash"]), bytes.fromhex(r["root"]), r["quorum"]
    )
    r["signatures"] = [
        {
            "node": rogue_node.key_id,
            "signature": b64e(rogue_node.sign(stmt)),
            "cert": node_certificate(rogue_service, rogue_cert, rogue_node.public_key, now),
        }
    ] * r["quorum"]
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, service_cert(network))
    assert e.value.code == "untrusted_node"
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, rogue_cert)
    assert e.value.code == "untrusted_node"


def test_wrong_transaction_and_min_signers(network: LocalNetwork, real_receipt: dict[str, Any]) -> None:
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, service_cert(network), tx_hash="00" * 32)
    assert e.value.code == "wrong_transaction"
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, service_cert(network), min_signers=4)
    assert e.value.code == "insufficient_signatures"
