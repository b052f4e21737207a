"""The notarisation request, its answer and the who-consumed query: the notary's wire formats.

A request is a body of canonical JSON signed (raw signature over exactly those bytes, Ed25519 or
P-256) by a *notary party*, a member or user that governance registered (`set_notary_parties`):

    {"v": 1, "ledger": L, "party": KEY_ID, "ts": MS, "tx_id": HEX64,
     "inputs": ["HEX64:INDEX", ...], "references": [...], "time_window": {"from": MS|null, "until": MS|null}|null,
     "filtered": FILTERED_TRANSACTION (optional, conclavium.notary.tearoff)}

It travels as the entry of application `notary` (`conclavium.apps`: name, 0x00, body). Its
request hash is the entry id, SHA-256 of those entry bytes. With `filtered`, the executors check
that the tear-off leads to `tx_id` and that its input, reference, time-window and notary groups,
all revealed, say exactly what the request says (the notary group naming this ledger).

A notarised request's write digest is the *notarisation statement* digest below, plain SHA-256:
with the request and its receipt anyone holding the service certificate checks offline that a
quorum of the consortium's executors notarised `tx_id` with these inputs (`verify_notarisation`).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from conclavium import apps, receipt
from conclavium.consortium import Identity
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e, canonical_json, loads, signed_envelope

from .tearoff import (
    COMMANDS_GROUP,
    INPUTS_GROUP,
    NOTARY_GROUP,
    OUTPUTS_GROUP,
    REFERENCES_GROUP,
    TIMEWINDOW_GROUP,
    FilteredTransaction,
    TearOffError,
)

NOTARY_APP = "notary"
REQUEST_VERSION = 1
MAX_REQUEST_BYTES = 64 * 1024
MAX_STATES = 256  # inputs, and references, per request
MAX_INDEX = 2**31 - 1  # a StateRef's output index is a Java int
STATE_REF = re.compile(r"^[0-9a-f]{64}:(0|[1-9][0-9]{0,9})$")
HEX64 = re.compile(r"[0-9a-f]{64}")
STATEMENT_DOMAIN = b"conclavium.notary.notarised.v1\x00"
WHO_CONSUMED_VERSION = 1
QUERY_VALIDITY_MS = 60_000
REPLY_CONTEXT = b"conclavium.notary.who-consumed.v1\x00"


class RequestError(ValueError):
    """A request or query refused for a reason the client can act on; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class TimeWindow(
    msgspec.Struct, forbid_unknown_fields=True, frozen=True, rename={"from_ms": "from", "until_ms": "until"}
):
    """Corda's `TimeWindow`: `fromTime` inclusive, `untilTime` exclusive, at least one given."""

    from_ms: int | None = None
    until_ms: int | None = None

    def contains(self, t_ms: int) -> bool:
        return (self.from_ms is None or t_ms >= self.from_ms) and (self.until_ms is None or t_ms < self.until_ms)

    def to_json(self) -> dict[str, int | None]:
        return {"from": self.from_ms, "until": self.until_ms}


class FilteredGroupBody(msgspec.Struct, forbid_unknown_fields=True):
    index: int
    components: list[str]
    nonces: list[str]


class FilteredBody(msgspec.Struct, forbid_unknown_fields=True):
    """A filtered transaction's shape (conclavium.notary.tearoff checks its content)."""

    id: str
    group_hashes: list[str]
    groups: list[FilteredGroupBody]


class RequestBody(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ledger: str
    party: str
    ts: int
    tx_id: str
    inputs: list[str]
    references: list[str]
    time_window: TimeWindow | None = None
    filtered: FilteredBody | None = None


_body_dec = msgspec.json.Decoder(RequestBody)


@dataclass(frozen=True)
class Request:
    """A parsed request; `body` is the exact signed bytes."""

    body: bytes
    signature: bytes
    fields: RequestBody

    @property
    def entry_data(self) -> bytes:
        return apps.app_entry(NOTARY_APP, self.body, self.signature).data

    @property
    def hash(self) -> str:
        """The request hash: the ledger entry's id."""
        return hashlib.sha256(self.entry_data).hexdigest()

    def to_json(self) -> dict[str, str]:
        return {"body": b64e(self.body), "signature": b64e(self.signature)}


# --- StateRefs and the components of a transaction ------------------------------------------------


def state_ref(txhash: str | bytes, index: int) -> str:
    """Corda's `StateRef(txhash, index)` as text: `hex:index`."""
    h = txhash.hex() if isinstance(txhash, bytes) else txhash.lower()
    ref = f"{h}:{index}"
    check_state_ref(ref)
    return ref


def check_state_ref(ref: object) -> str:
    # only a 10-digit index can exceed MAX_INDEX: 64 hex digits, ':', 10 digits is 75 characters
    if not isinstance(ref, str) or not STATE_REF.fullmatch(ref) or (len(ref) == 75 and int(ref[65:]) > MAX_INDEX):
        raise RequestError("invalid_state_ref", "a state reference is 64 lowercase hex digits, ':', an index < 2^31")
    return ref


def encode_state_ref(ref: str) -> bytes:
    """A StateRef component: the 32-byte transaction hash, then the index as a big-endian int32."""
    return bytes.fromhex(ref[:64]) + struct.pack(">i", int(ref[65:]))


def decode_state_ref(component: bytes) -> str:
    if len(component) != 36:
        raise RequestError("bad_tear_off", "a state reference component is 36 bytes")
    (index,) = struct.unpack(">i", component[32:])
    if index < 0:
        raise RequestError("bad_tear_off", "a state reference component has a negative index")
    return f"{component[:32].hex()}:{index}"


def encode_time_window(tw: TimeWindow) -> bytes:
    return canonical_json(tw.to_json())


def encode_notary(ledger: str) -> bytes:
    """The notary component: this consortium's notary is its ledger, named by its id."""
    return ledger.encode()


def transaction_groups(
    inputs: list[str],
    references: list[str],
    time_window: TimeWindow | None,
    ledger: str,
    outputs: list[bytes] | None = None,
    commands: list[bytes] | None = None,
) -> dict[int, list[bytes]]:
    """The component groups of a transaction with these parts (outputs and commands opaque)."""
    groups: dict[int, list[bytes]] = {}
    if inputs:
        groups[INPUTS_GROUP] = [encode_state_ref(r) for r in inputs]
    if outputs:
        groups[OUTPUTS_GROUP] = list(outputs)
    if commands:
        groups[COMMANDS_GROUP] = list(commands)
    groups[NOTARY_GROUP] = [encode_notary(ledger)]
    if time_window is not None:
        groups[TIMEWINDOW_GROUP] = [encode_time_window(time_window)]
    if references:
        groups[REFERENCES_GROUP] = [encode_state_ref(r) for r in references]
    return groups


NOTARY_GROUPS = (INPUTS_GROUP, NOTARY_GROUP, TIMEWINDOW_GROUP, REFERENCES_GROUP)


# --- requests ------------------------------------------------------------------------------------


def make(
    key: PrivateKey,
    ledger: str,
    tx_id: str,
    inputs: list[str],
    references: list[str] | None = None,
    time_window: TimeWindow | None = None,
    filtered: FilteredTransaction | None = None,
    ts_ms: int | None = None,
) -> Request:
    body: dict[str, Any] = {
        "v": REQUEST_VERSION,
        "ledger": ledger,
        "party": key.key_id,
        "ts": ts_ms if ts_ms is not None else _now_ms(),
        "tx_id": tx_id,
        "inputs": inputs,
        "references": references or [],
        "time_window": time_window.to_json() if time_window is not None else None,
    }
    if filtered is not None:
        body["filtered"] = filtered.to_json()
    raw = canonical_json(body)
    return parse(raw, key.sign(raw), ledger)


def from_json(obj: Any, ledger: str) -> Request:
    """`{"body": base64, "signature": base64}` as a client sends it."""
    return parse(*signed_envelope(obj, "a notarisation request", RequestError), ledger)


def parse(body: bytes, signature: bytes, ledger: str) -> Request:
    """Check a request's shape (not its signature, party or state: the executors do that)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise RequestError("too_large", f"a request body is at most {MAX_REQUEST_BYTES} bytes")
    try:
        f = _body_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise RequestError("invalid_body", f"the request body does not match the schema: {str(e)[:200]}") from None
    except RecursionError:  # the schema is flat: only a hostile body nests this deep
        raise RequestError("invalid_body", "the request body nests too deeply") from None
    if f.v != REQUEST_VERSION:
        raise RequestError("unsupported_version", f"request version {f.v} is not supported")
    if f.ledger != ledger:
        raise RequestError("wrong_ledger", "the request is for another ledger")
    if not HEX64.fullmatch(f.party) or not HEX64.fullmatch(f.tx_id):
        raise RequestError("invalid_body", "party and tx_id are 64 lowercase hex digits")
    if not 0 <= f.ts < 2**53:
        raise RequestError("invalid_body", "ts is milliseconds since the epoch")
    for name, refs in (("inputs", f.inputs), ("references", f.references)):
        if len(refs) > MAX_STATES:
            raise RequestError("too_many_states", f"at most {MAX_STATES} {name} per request")
        for r in refs:
            check_state_ref(r)
        if len(set(refs)) != len(refs):
            raise RequestError("duplicate_state", f"a state is named twice in {name}")
    if f.references and not set(f.inputs).isdisjoint(f.references):
        raise RequestError("duplicate_state", "a state cannot be both an input and a reference")
    if not f.inputs and f.time_window is None:
        raise RequestError("nothing_to_notarise", "a request names inputs or a time window")
    tw = f.time_window
    if tw is not None:
        if tw.from_ms is None and tw.until_ms is None:
            raise RequestError("invalid_time_window", "a time window has a start, an end or both")
        if tw.from_ms is not None and tw.until_ms is not None and tw.from_ms >= tw.until_ms:
            raise RequestError("invalid_time_window", "a time window's start is before its end")
        if any(t is not None and not 0 <= t < 2**53 for t in (tw.from_ms, tw.until_ms)):
            raise RequestError("invalid_time_window", "time window bounds are milliseconds since the epoch")
    return Request(body, signature, f)


def check_filtered(req: Request) -> None:
    """The tear-off leads to the request's tx id and says exactly what the request says. Read
    from the parsed body as it is (no round trip through JSON objects), and compared as component
    bytes: the request's states and time window, already checked, have one encoding each."""
    f = req.fields
    fb = f.filtered
    if fb is None:
        return
    try:
        groups = [(g.index, g.components, g.nonces) for g in fb.groups]
        ftx = FilteredTransaction.from_parts(fb.id, fb.group_hashes, groups)
        if ftx.id.hex() != f.tx_id:
            raise TearOffError("the filtered transaction's id is not the request's tx_id")
        ftx.verify()
        inputs = ftx.components(INPUTS_GROUP)
        references = ftx.components(REFERENCES_GROUP)
        windows = ftx.components(TIMEWINDOW_GROUP)
        notaries = ftx.components(NOTARY_GROUP)
    except TearOffError as e:
        raise RequestError("bad_tear_off", str(e)) from None
    if inputs != [encode_state_ref(r) for r in f.inputs] or references != [encode_state_ref(r) for r in f.references]:
        raise RequestError("bad_tear_off", "the filtered transaction's inputs or references are not the request's")
    expected_window = [encode_time_window(f.time_window)] if f.time_window is not None else []
    if windows != expected_window:
        raise RequestError("bad_tear_off", "the filtered transaction's time window is not the request's")
    if notaries != [encode_notary(f.ledger)]:
        raise RequestError("bad_tear_off", "the filtered transaction does not name this ledger as its notary")


def statement_digest(ledger: str, f: RequestBody) -> bytes:
    """What a notarised request's leaf commits to: ledger, tx id, inputs, references, time window."""
    tw = f.time_window.to_json() if f.time_window is not None else None
    return hashlib.sha256(STATEMENT_DOMAIN + canonical_json([ledger, f.tx_id, f.inputs, f.references, tw])).digest()


@dataclass(frozen=True)
class Notarisation:
    """What a verified receipt proves: a quorum notarised this transaction id with these states."""

    ledger: str
    tx_id: str
    inputs: list[str]
    references: list[str]
    time_window: dict[str, int | None] | None
    party: str
    height: int
    signers: list[str]


def verify_notarisation(receipt_doc: Any, request: Request, identity: Identity) -> Notarisation:
    """Offline: the receipt verifies against the consortium identity (nodes of k members), is the
    receipt of this request, and its leaf commits to the notarisation statement. Raises
    receipt.ReceiptError."""
    checked = receipt.verify(receipt_doc, identity, tx_hash=request.hash)
    f = request.fields
    if checked.ledger != f.ledger:
        raise receipt.ReceiptError("wrong_ledger", "the receipt is for another ledger than the request")
    if receipt_doc.get("write_digest") != statement_digest(f.ledger, f).hex():
        raise receipt.ReceiptError("not_notarised", "the receipt's leaf is not this request's notarisation")
    tw = f.time_window.to_json() if f.time_window is not None else None
    return Notarisation(f.ledger, f.tx_id, f.inputs, f.references, tw, f.party, checked.height, checked.signers)


# --- the answer ---------------------------------------------------------------------------------


def conflict_message(tx_id: str, consumed: dict[str, dict[str, str]]) -> str:
    """Corda's `NotaryError.Conflict(txId, consumedStates)` as the Invalid entry's message: for
    each conflicting state, `StateConsumptionDetails` (SHA-256 of the consuming transaction's id,
    and whether the state was named as an input or a reference)."""
    return canonical_json({"tx_id": tx_id, "consumed_states": consumed}).decode()


def consumption_details(consuming_tx: str, kind: str) -> dict[str, str]:
    return {"hash_of_transaction_id": hashlib.sha256(bytes.fromhex(consuming_tx)).hexdigest(), "type": kind}


def parse_error(reason: str, message: str) -> dict[str, Any] | None:
    """The structured error of an Invalid request (conflict or time window), if it has one."""
    if reason not in ("conflict", "time_window_invalid"):
        return None
    try:
        value = loads(message)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- who consumed a state: a signed query, answered sealed --------------------------------------


class WhoConsumedBody(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    ledger: str
    party: str
    ts: int
    nonce: str
    reply_key: str
    state: str


_who_dec = msgspec.json.Decoder(WhoConsumedBody)


def make_who_consumed(key: PrivateKey, ledger: str, state: str) -> tuple[dict[str, str], Any, bytes]:
    """A signed who-consumed query; returns it, the private reply key and the body."""
    check_state_ref(state)
    reply = sealing.generate_key()
    body = canonical_json(
        {
            "v": WHO_CONSUMED_VERSION,
            "ledger": ledger,
            "party": key.key_id,
            "ts": _now_ms(),
            "nonce": os.urandom(8).hex(),
            "reply_key": sealing.public_bytes(reply).hex(),
            "state": state,
        }
    )
    return {"body": b64e(body), "signature": b64e(key.sign(body))}, reply, body


def parse_who_consumed(obj: Any) -> tuple[WhoConsumedBody, bytes, bytes]:
    body, sig = signed_envelope(obj, "a who-consumed query", RequestError)
    try:
        q = _who_dec.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise RequestError("invalid_body", f"the query body does not match the schema: {str(e)[:200]}") from None
    except RecursionError:
        raise RequestError("invalid_body", "the query body nests too deeply") from None
    if q.v != WHO_CONSUMED_VERSION:
        raise RequestError("unsupported_version", f"query version {q.v} is not supported")
    check_state_ref(q.state)
    return q, body, sig


def reply_context(body: bytes) -> bytes:
    return REPLY_CONTEXT + hashlib.sha256(body).digest()


def seal_answer(q: WhoConsumedBody, body: bytes, answer: dict[str, Any]) -> dict[str, str]:
    try:
        return {"sealed": b64e(sealing.seal(canonical_json(answer), bytes.fromhex(q.reply_key), reply_context(body)))}
    except (ValueError, sealing.SealError):
        raise RequestError("invalid_reply_key", "reply_key must be a 32-byte X25519 public key in hex") from None


def open_answer(reply: dict[str, Any], key: Any, body: bytes) -> dict[str, Any]:
    return dict(loads(sealing.open_sealed(b64d(reply["sealed"]), key, reply_context(body))))


def _now_ms() -> int:
    return int(time.time() * 1000)
