"""Signed reads: how a caller proves who it is when reading a private map.

A query is canonical JSON `{"v", "ledger", "sender", "ts", "nonce", "map", "key"}` signed by the
caller, sent as `{"body": base64, "signature": base64}`. Executors check the signature, that the
timestamp is recent (queries are not ordered, so the executor's clock is the reference) and that
the caller may read the entry.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e, canonical_json
from conclavium.tx import TxError, check_map_name

QUERY_VERSION = 1
QUERY_VALIDITY_MS = 60_000


class QueryBody(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ledger: str
    sender: str
    ts: int
    nonce: str
    map: str
    key: str


_dec = msgspec.json.Decoder(QueryBody)


def make(key: PrivateKey, ledger: str, map_name: str, entry_key: str, ts_ms: int) -> dict[str, str]:
    body = canonical_json(
        {
            "v": QUERY_VERSION,
            "ledger": ledger,
            "sender": key.key_id,
            "ts": ts_ms,
            "nonce": os.urandom(8).hex(),
            "map": map_name,
            "key": entry_key,
        }
    )
    return {"body": b64e(body), "signature": b64e(key.sign(body))}


def parse(obj: Any) -> tuple[QueryBody, bytes, bytes]:
    """Decode a signed query; raises TxError. The signature is checked by the executor."""
    if not isinstance(obj, dict) or not isinstance(obj.get("body"), str):
        raise TxError("missing_field", "a query needs 'body' and 'signature'")
    if not isinstance(obj.get("signature"), str):
        raise TxError("missing_field", "a query needs 'body' and 'signature'")
    try:
        body, sig = b64d(obj["body"]), b64d(obj["signature"])
    except ValueError:
        raise TxError("invalid_encoding", "'body' and 'signature' must be standard base64") from None
    try:
        q = _dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise TxError("invalid_body", f"query body does not match the schema: {e}") from None
    if q.v != QUERY_VERSION:
        raise TxError("unsupported_version", f"query version {q.v} is not supported")
    check_map_name(q.map)
    return q, body, sig
