"""Messages executors put in the ledger about themselves: genesis, join, endorse, rekey, snapshot
digests.

Each is canonical JSON signed by the sending node's key (an Entry of kind NODE). Genesis and join
carry the sender's public keys and attestation evidence binding them, so they verify against the
key they carry; the others are verified against the key of an already trusted sender. What each
must carry and who must sign it is checked in `services/executor/node_auth.py` and described in
docs/formats.md.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from conclavium.block import Entry, Kind
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import canonical_json

NODE_MSG_VERSION = 1
VIRTUAL_DEV_MEASUREMENT = hashlib.sha256(b"conclavium-executor virtual tee v1").hexdigest()
"""What a `virtual` (development) executor reports as its measurement; local genesis allows it."""


class Evidence(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Attestation evidence as a join carries it; decoding refuses any other shape, so a malformed
    request is Invalid with a reason before any check looks inside it."""

    platform: str
    evidence: str  # base64 report or quote
    certs: dict[str, str] = {}  # name -> base64 DER certificate
    collateral: dict[str, str] = {}  # name -> base64 collateral document
    event_log: str = ""  # base64 TDX event log (CCEL), replayed into the quote's RTMRs


class NodeInfo(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    signing_key: str  # PEM
    encryption_key: str  # hex, X25519 raw
    evidence: Evidence
    name: str = ""


class Genesis(msgspec.Struct, tag="genesis", forbid_unknown_fields=True):
    v: int
    ledger: str
    ts: int
    node: NodeInfo
    service_cert: str
    node_cert: str
    config: dict[str, Any]
    tx_key: dict[str, str]  # {"id", "public" hex, "signature"} signed by the service key


class Join(msgspec.Struct, tag="join", forbid_unknown_fields=True):
    v: int
    ledger: str
    ts: int
    node: NodeInfo


class Endorse(msgspec.Struct, tag="endorse", forbid_unknown_fields=True):
    v: int
    ledger: str
    ts: int
    sender: str
    node: str
    cert: str
    wrapped_secrets: str  # base64 HPKE box to the node's encryption key


class SnapshotDigest(msgspec.Struct, tag="snapshot", forbid_unknown_fields=True):
    """A trusted node's digest of its state snapshot at `height`, recorded so commits cover it."""

    v: int
    ledger: str
    ts: int
    sender: str
    height: int
    digest: str


class Rekey(msgspec.Struct, tag="rekey", forbid_unknown_fields=True):
    """A new generation of ledger secrets after an accepted rotate_ledger_secret proposal: its
    transaction key (signed by the service key) and one sealed share per trusted node."""

    v: int
    ledger: str
    ts: int
    sender: str
    proposal: str  # the accepted rotate_ledger_secret proposal this rekey answers
    generation: str
    tx_key: dict[str, str]
    shares: dict[str, str]  # node id -> base64 HPKE box of the generation


class RecoveryShares(msgspec.Struct, tag="recovery_shares", forbid_unknown_fields=True):
    """A trusted node's new share set (conclavium/recovery.py): the ledger secrets wrapped under a
    fresh recovery key, split `threshold` of n, one share sealed to each member's encryption key.
    Issued again whenever the members holding shares, the threshold or the generations change."""

    v: int
    ledger: str
    ts: int
    sender: str
    id: str  # SHA-256 of the wrapped secrets
    threshold: int
    generations: list[str]  # ids of every generation the wrapped secrets hold, in ledger order
    wrapped: str  # base64 AES-256-GCM of the LedgerSecrets under HKDF(recovery key)
    shares: dict[str, dict[str, str]]  # member id -> {"box": base64 HPKE to the member, "digest"}


class RecoveryOpen(msgspec.Struct, tag="recovery_open", forbid_unknown_fields=True):
    """A new executor, started to recover a ledger whose executors are all lost, asks the members
    for their shares of set `set`: its keys and the evidence binding them, as a join carries."""

    v: int
    ledger: str
    ts: int
    node: NodeInfo
    set: str


class Recovered(msgspec.Struct, tag="recovered", forbid_unknown_fields=True):
    """The recovering node reconstructed the ledger secrets from the shares of `members`: its node
    certificate, signed with the recovered service key, proves it. The ledger then retires every
    lost node and trusts this one."""

    v: int
    ledger: str
    ts: int
    sender: str
    set: str
    members: list[str]
    cert: str


NodeMessage = Genesis | Join | Endorse | SnapshotDigest | Rekey | RecoveryShares | RecoveryOpen | Recovered
_decoder = msgspec.json.Decoder(NodeMessage)


def decode(data: bytes) -> NodeMessage:
    """Raises msgspec.DecodeError or ValidationError, also for a body nested too deeply."""
    try:
        return _decoder.decode(data)
    except RecursionError:
        raise msgspec.DecodeError("node message is nested too deeply") from None


def make_entry(msg: NodeMessage, key: PrivateKey) -> Entry:
    data = canonical_json(msgspec.to_builtins(msg))
    return Entry(Kind.NODE, data, key.sign(data))


def encryption_spki(raw: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a raw X25519 key, as attestation binds keys in SPKI form."""
    return x25519.X25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def bound_keys(signing_spki: bytes, encryption_key: bytes) -> list[bytes]:
    """The public keys a node's attestation evidence must bind, in order."""
    return [signing_spki, encryption_spki(encryption_key)]


def secrets_context(ledger: str, node_id: str) -> bytes:
    return f"conclavium.secrets.v1|{ledger}|{node_id}".encode()


def rekey_context(ledger: str, node_id: str, generation: str) -> bytes:
    return f"conclavium.rekey.v1|{ledger}|{node_id}|{generation}".encode()
