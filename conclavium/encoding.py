"""Byte encodings shared by every component.

Two encodings, each with one job:
- JSON (orjson) for everything a person or an HTTP client sees; `canonical_json` sorts keys and
  has no whitespace, so the same value always gives the same bytes (used where bytes are hashed).
- MessagePack (msgspec) for messages between services: compact and fast. Hashes and signatures
  are always taken over the exact bytes received, never over a re-encoding, so the encoder need
  not be canonical across implementations.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

_packer = msgspec.msgpack.Encoder()
_unpacker = msgspec.msgpack.Decoder()


def pack(value: Any) -> bytes:
    return _packer.encode(value)


def unpack(data: bytes) -> Any:
    return _unpacker.decode(data)


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64d(text: str) -> bytes:
    """Strict standard base64; raises ValueError on anything else."""
    return base64.b64decode(text, validate=True)


def signed_envelope(obj: Any, what: str, error: Callable[[str, str], Exception]) -> tuple[bytes, bytes]:
    """Split the HTTP form `{"body": base64, "signature": base64}` every signed request uses into
    (body, signature); refusals are `error(code, message)`, so each kind of request keeps its class."""
    if not isinstance(obj, dict) or not isinstance(obj.get("body"), str) or not isinstance(obj.get("signature"), str):
        raise error("missing_field", f'{what} is {{"body": base64, "signature": base64}}')
    try:
        return b64d(obj["body"]), b64d(obj["signature"])
    except ValueError:
        raise error("invalid_encoding", "'body' and 'signature' must be standard base64") from None
