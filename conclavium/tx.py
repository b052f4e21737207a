"""The transaction: what a client signs, and the checks every component applies to it.

Operations that touch a private map travel sealed: the client encrypts the whole operation list
(map names included) with HPKE to the ledger's transaction key, binding it to the rest of the body
(the header), so only attested executors can read it and the ciphertext cannot be moved into
another transaction. Public-only transactions may stay in clear.

A transaction is a `body` (canonical JSON bytes) and the sender's raw signature over exactly those
bytes. Its hash is SHA-256(body): a signature re-made over the same body does not make a new
transaction, so replays are caught whatever the signature. The body names the ledger, the sender's
key id, a random nonce, the client's timestamp (the executor refuses bodies outside its validity
window, which bounds how long it must remember hashes for replay protection) and the operations.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from conclavium import apps, values
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e, canonical_json, signed_envelope

TX_VERSION = 1
MAX_TX_BYTES = 64 * 1024
MAX_OPS = 64
MAX_KEY_LEN = 512
MAP_NAME = re.compile(r"^(public:)?[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
RESERVED_PREFIXES = ("public:gov.", "gov.", "public:sys.", "sys.")


class TxError(ValueError):
    """A transaction refused for a reason a client can act on; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Op(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["put", "delete"]
    map: str
    key: str
    value: Any = None


class Sealed(msgspec.Struct, forbid_unknown_fields=True):
    key: str  # id of the transaction key it is sealed to
    ct: str  # base64: HPKE encapsulated key followed by the ciphertext of the JSON operation list


class TxBody(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ledger: str
    sender: str
    nonce: str
    ts: int
    app: Literal["kv"]  # conclavium.apps.KV: a body names its application too
    ops: list[Op] | None = None
    sealed: Sealed | None = None


_body_decoder = msgspec.json.Decoder(TxBody)
_ops_decoder = msgspec.json.Decoder(list[Op])
SEAL_CONTEXT = b"conclavium.tx-ops.v1\x00"


@dataclass(frozen=True, slots=True)
class SignedTx:
    body: bytes
    signature: bytes

    @property
    def hash(self) -> bytes:
        return hashlib.sha256(self.body).digest()

    def to_json(self) -> dict[str, str]:
        return {"body": b64e(self.body), "signature": b64e(self.signature)}


def is_public_map(name: str) -> bool:
    return name.startswith("public:")


def check_map_name(name: str) -> None:
    if not MAP_NAME.match(name):
        raise TxError("invalid_map", f"invalid map name {name[:64]!r}")
    if name.startswith(RESERVED_PREFIXES):
        raise TxError("reserved_map", f"map {name!r} is reserved for governance and the system")


def parse_body(body: bytes, *, ledger: str | None = None) -> TxBody:
    """Decode and validate a body; raises TxError naming the first problem. Gateway and executors
    both call this, so both refuse the same bodies for the same reason."""
    if len(body) > MAX_TX_BYTES:
        raise TxError("too_large", f"transaction body exceeds {MAX_TX_BYTES} bytes")
    try:
        tx = _body_decoder.decode(body)
    except msgspec.ValidationError as e:
        raise TxError("invalid_body", f"transaction body does not match the schema: {e}") from None
    except msgspec.DecodeError:
        raise TxError("invalid_body", "transaction body is not valid JSON") from None
    except RecursionError:
        # far beyond MAX_DEPTH: the same reason and words as the value check gives
        raise TxError(values.TOO_DEEP, values.TOO_DEEP_MESSAGE) from None
    if tx.v != TX_VERSION:
        raise TxError("unsupported_version", f"transaction version {tx.v} is not supported")
    if not 0 <= tx.ts <= values.MAX_INT:
        # the header is hashed into the sealing context as canonical JSON: it keeps to the domain too
        raise TxError(values.INT_OUT_OF_RANGE, f"ts: {values.INT_OUT_OF_RANGE_MESSAGE}, and not negative")
    if ledger is not None and tx.ledger != ledger:
        raise TxError("wrong_ledger", "transaction is for another ledger")
    if not re.fullmatch(r"[0-9a-f]{64}", tx.sender):
        raise TxError("invalid_body", "sender must be a 64-hex-digit key id")
    if (tx.ops is None) == (tx.sealed is None):
        raise TxError("invalid_body", "a transaction has either 'ops' or 'sealed'")
    if tx.ops is not None:
        check_ops(tx.ops)
    return tx


def check_ops(ops: list[Op]) -> None:
    """Operation rules, the value domain (`conclavium.values`) included."""
    if not 1 <= len(ops) <= MAX_OPS:
        raise TxError("invalid_body", f"a transaction has 1 to {MAX_OPS} operations")
    for i, op in enumerate(ops):
        check_map_name(op.map)
        if not op.key or len(op.key) > MAX_KEY_LEN:
            raise TxError("invalid_key", f"keys are 1 to {MAX_KEY_LEN} characters")
        if op.op == "put" and op.value is None:
            raise TxError("invalid_body", "put needs a value")
        try:
            values.check_string(op.key, f"ops[{i}].key")
            values.check(op.value, f"ops[{i}].value")
        except values.ValueDomainError as e:
            raise TxError(e.code, e.message) from None


def seal_context(header: dict[str, Any]) -> bytes:
    """HPKE `info` for sealed operations: the body's other fields, so the box is bound to them."""
    return SEAL_CONTEXT + canonical_json({k: v for k, v in header.items() if k not in ("ops", "sealed")})


def sealed_box(tx: TxBody) -> tuple[bytes, bytes]:
    """The HPKE box of a sealed transaction and the `info` it was sealed with."""
    assert tx.sealed is not None
    try:
        box = b64d(tx.sealed.ct)
    except ValueError:
        raise TxError("invalid_encoding", "sealed operations are not base64") from None
    return box, seal_context(msgspec.to_builtins(tx))


def opened_ops(plaintext: bytes) -> list[Op]:
    """Validate opened operations. Errors name what went wrong without repeating sealed content."""
    if len(plaintext) > MAX_TX_BYTES:
        raise TxError("too_large", f"sealed operations exceed {MAX_TX_BYTES} bytes")
    try:
        ops = _ops_decoder.decode(plaintext)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise TxError("invalid_sealed_ops", "the sealed operations do not match the schema") from None
    except RecursionError:
        raise TxError(values.TOO_DEEP, values.TOO_DEEP_MESSAGE) from None
    try:
        check_ops(ops)
    except TxError as e:
        raise TxError(e.code, f"a sealed operation is invalid ({e.code})") from None
    return ops


def open_ops(tx: TxBody, opener: Any) -> list[Op]:
    """Decrypt and validate the sealed operations with `opener(key_id, box, info) -> bytes`."""
    assert tx.sealed is not None
    box, info = sealed_box(tx)
    return opened_ops(opener(tx.sealed.key, box, info))


def from_json(obj: Any) -> SignedTx:
    """Read the HTTP form `{"body": base64, "signature": base64}`."""
    if not isinstance(obj, dict):
        raise TxError("invalid_body", "a transaction is a JSON object")
    return SignedTx(*signed_envelope(obj, "a transaction", TxError))


def make_body(
    ledger: str,
    sender: str,
    ops: list[dict[str, Any]],
    ts_ms: int,
    nonce: str | None = None,
    tx_key: tuple[str, bytes] | None = None,
) -> bytes:
    """The canonical body. With `tx_key` (key id, X25519 public key) the operations are sealed
    whenever one of them touches a private map; without it they stay in clear. Raises TxError for
    a value outside the value domain or a body over the size limit, before anything is signed."""
    for i, op in enumerate(ops):
        try:
            values.check(op.get("value"), f"ops[{i}].value")
            values.check_string(op.get("key"), f"ops[{i}].key")
        except values.ValueDomainError as e:
            raise TxError(e.code, e.message) from None
    header: dict[str, Any] = {
        "v": TX_VERSION,
        "ledger": ledger,
        "sender": sender,
        "nonce": nonce or os.urandom(12).hex(),
        "ts": ts_ms,
        "app": apps.KV,
    }
    if tx_key is not None and any(not is_public_map(op["map"]) for op in ops):
        key_id, public = tx_key
        box = sealing.seal(canonical_json(ops), public, seal_context(header))
        body = canonical_json({**header, "sealed": {"key": key_id, "ct": b64e(box)}})
    else:
        body = canonical_json({**header, "ops": ops})
    if len(body) > MAX_TX_BYTES:
        raise TxError("too_large", f"transaction body is {len(body)} bytes; the limit is {MAX_TX_BYTES}")
    return body


def sign(key: PrivateKey, body: bytes) -> SignedTx:
    return SignedTx(body, key.sign(body))
