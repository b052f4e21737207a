"""Signed, sealed reads: how a caller reads a private map without anyone in between learning what
it asked or what it got.

The query body is canonical JSON `{"v", "ledger", "sender", "ts", "nonce", "reply_key", "sealed"}`
signed by the caller and sent as `{"body": base64, "signature": base64}`. `sealed` is the
`{"map", "key"}` request sealed (HPKE) to the ledger's transaction key, bound to the rest of the
body; `reply_key` is a fresh X25519 public key of the caller's, to which the executor seals its
answer. Executors accept a query within 60 s of their clock (queries are not ordered).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric import x25519

from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e, canonical_json, loads, signed_envelope
from conclavium.tx import Sealed, TxError, check_map_name

QUERY_VERSION = 1
QUERY_VALIDITY_MS = 60_000
REQUEST_CONTEXT = b"conclavium.query.v1\x00"
REPLY_CONTEXT = b"conclavium.query-reply.v1\x00"


class QueryBody(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ledger: str
    sender: str
    ts: int
    nonce: str
    reply_key: str
    sealed: Sealed


class QueryRequest(msgspec.Struct, forbid_unknown_fields=True):
    map: str
    key: str


_dec = msgspec.json.Decoder(QueryBody)
_req_dec = msgspec.json.Decoder(QueryRequest)


def request_context(header: dict[str, Any]) -> bytes:
    return REQUEST_CONTEXT + canonical_json({k: v for k, v in header.items() if k != "sealed"})


def reply_context(body: bytes) -> bytes:
    return REPLY_CONTEXT + hashlib.sha256(body).digest()


def make(
    key: PrivateKey, ledger: str, map_name: str, entry_key: str, ts_ms: int, tx_key: tuple[str, bytes]
) -> tuple[dict[str, str], x25519.X25519PrivateKey, bytes]:
    """A signed, sealed query; returns it, the private reply key and the body (to open the reply)."""
    reply = sealing.generate_key()
    header = {
        "v": QUERY_VERSION,
        "ledger": ledger,
        "sender": key.key_id,
        "ts": ts_ms,
        "nonce": os.urandom(8).hex(),
        "reply_key": sealing.public_bytes(reply).hex(),
    }
    key_id, public = tx_key
    box = sealing.seal(canonical_json({"map": map_name, "key": entry_key}), public, request_context(header))
    body = canonical_json({**header, "sealed": {"key": key_id, "ct": b64e(box)}})
    return {"body": b64e(body), "signature": b64e(key.sign(body))}, reply, body


def parse(obj: Any) -> tuple[QueryBody, bytes, bytes]:
    """Decode a signed query; raises TxError. Signature and sealed request are the executor's."""
    body, sig = signed_envelope(obj, "a query", TxError)
    try:
        q = _dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise TxError("invalid_body", f"query body does not match the schema: {e}") from None
    if q.v != QUERY_VERSION:
        raise TxError("unsupported_version", f"query version {q.v} is not supported")
    return q, body, sig


def open_request(q: QueryBody, opener: Any) -> QueryRequest:
    """Decrypt the sealed request with `opener(key_id, box, info)`; errors do not echo its content."""
    try:
        box = b64d(q.sealed.ct)
    except ValueError:
        raise TxError("invalid_encoding", "sealed request is not base64") from None
    plaintext = opener(q.sealed.key, box, request_context(msgspec.to_builtins(q)))
    try:
        req = _req_dec.decode(plaintext)
        check_map_name(req.map)
    except (msgspec.DecodeError, msgspec.ValidationError, TxError):
        raise TxError("invalid_sealed_request", "the sealed request is malformed") from None
    return req


def seal_reply(q: QueryBody, body: bytes, result: dict[str, Any]) -> dict[str, str]:
    try:
        recipient = bytes.fromhex(q.reply_key)
        return {"sealed": b64e(sealing.seal(canonical_json(result), recipient, reply_context(body)))}
    except (ValueError, sealing.SealError):
        raise TxError("invalid_reply_key", "reply_key must be a 32-byte X25519 public key in hex") from None


def open_reply(reply: dict[str, Any], key: x25519.X25519PrivateKey, body: bytes) -> dict[str, Any]:
    return dict(loads(sealing.open_sealed(b64d(reply["sealed"]), key, reply_context(body))))
