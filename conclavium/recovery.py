"""Disaster recovery: the ledger secrets split k-of-n among the members, and how a share travels.

Specified once here and used by the executors (who issue share sets and reconstruct) and by the
members' CLI (who open their share and hand it to a recovering executor):

- A *share set* wraps the whole `LedgerSecrets` (service key and certificate, every generation
  of ledger secret and transaction key) with AES-256-GCM under a key derived (HKDF-SHA256) from a
  fresh 16-byte *recovery key*. The recovery key is split with Shamir's scheme (k of n, over
  GF(2^128), pycryptodome's `Crypto.Protocol.SecretSharing.Shamir`, which shares exactly 16-byte
  secrets) into one share per member holding an encryption key. Each share (1 byte index + 16
  bytes) is HPKE-sealed (`conclavium.crypto.sealing`) to that member's X25519 encryption key and
  recorded in the public ledger with `share_digest`, a SHA-256 commitment that lets the
  recovering executor tell a bad share from a good one without trying combinations.
- A member opens its share locally and seals it again, to the recovering executor's attested
  encryption key, inside a signed COSE_Sign1 governance document of type `recovery_share`: the
  share never travels in clear through the gateway, NATS or the ledger.

Every ciphertext is bound (HPKE info / AEAD associated data) to the ledger, the set id and the
member (and node), so nothing moves to another set, member or node.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any

from Crypto.Protocol.SecretSharing import Shamir
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from conclavium import cose
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import canonical_json
from conclavium.governance.model import MSG_RECOVERY_SHARE

RECOVERY_KEY_BYTES = 16  # what pycryptodome's Shamir shares; it wraps the 32-byte AES key's input
SHARE_BYTES = 1 + RECOVERY_KEY_BYTES  # index, then the polynomial's value at that index
MAX_SHARE_HOLDERS = 255  # Shamir indexes are one byte


class RecoveryError(ValueError):
    """A share, share set or wrapped secret that does not open or does not fit; `code` is the
    machine-readable reason."""

    def __init__(self, message: str, code: str = "bad_share") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def set_id(wrapped: bytes) -> str:
    """A share set is named by the SHA-256 of its wrapped secrets (unique: fresh key and nonce)."""
    return hashlib.sha256(wrapped).hexdigest()


def _wrap_context(ledger: str) -> bytes:
    return f"conclavium.recovery.wrap.v1|{ledger}".encode()


def member_context(ledger: str, set_id_: str, member: str) -> bytes:
    return f"conclavium.recovery.member.v1|{ledger}|{set_id_}|{member}".encode()


def node_context(ledger: str, set_id_: str, member: str, node: str) -> bytes:
    return f"conclavium.recovery.node.v1|{ledger}|{set_id_}|{member}|{node}".encode()


def share_digest(ledger: str, set_id_: str, member: str, share: bytes) -> str:
    """The public commitment to one member's share (the share is 128 random-looking bits)."""
    return hashlib.sha256(
        b"conclavium.recovery.share.v1|" + member_context(ledger, set_id_, member) + share
    ).hexdigest()


def _aes_key(recovery_key: bytes, ledger: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, _wrap_context(ledger)).derive(recovery_key)


def wrap_secrets(secrets: bytes, recovery_key: bytes, ledger: str) -> bytes:
    """nonce (12) || AES-256-GCM(secrets) under HKDF(recovery key), associated data the ledger."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_aes_key(recovery_key, ledger)).encrypt(nonce, secrets, _wrap_context(ledger))


def unwrap_secrets(wrapped: bytes, recovery_key: bytes, ledger: str) -> bytes:
    try:
        return AESGCM(_aes_key(recovery_key, ledger)).decrypt(wrapped[:12], wrapped[12:], _wrap_context(ledger))
    except (InvalidTag, ValueError):
        raise RecoveryError("the shares do not reconstruct this set's recovery key", "shares_do_not_combine") from None


def split_key(recovery_key: bytes, threshold: int, holders: int) -> list[bytes]:
    """`holders` shares of which any `threshold` reconstruct the key, each index byte + 16 bytes."""
    if len(recovery_key) != RECOVERY_KEY_BYTES:
        raise RecoveryError("a recovery key is 16 bytes", "bad_key")
    if not 1 <= threshold <= holders <= MAX_SHARE_HOLDERS:
        raise RecoveryError(f"need 1 <= threshold ({threshold}) <= holders ({holders}) <= 255", "bad_threshold")
    if threshold == 1:  # every share is the key itself (a degree-0 polynomial)
        return [bytes([i]) + recovery_key for i in range(1, holders + 1)]
    return [bytes([i]) + value for i, value in Shamir.split(threshold, holders, recovery_key)]


def combine(shares: list[bytes], threshold: int) -> bytes:
    """The recovery key from `threshold` distinct shares; RecoveryError on too few or malformed."""
    distinct = {s[0]: s for s in shares if len(s) == SHARE_BYTES and s[0] > 0}
    if len(distinct) < threshold or len(distinct) != len(shares):
        raise RecoveryError(f"need {threshold} distinct well-formed shares, got {len(distinct)}", "too_few_shares")
    chosen = sorted(distinct.values())[:threshold]
    if threshold == 1:
        return chosen[0][1:]
    return Shamir.combine([(s[0], s[1:]) for s in chosen])


@dataclass
class IssuedSet:
    """A new share set: what the `RecoveryShares` node message carries."""

    id: str
    wrapped: str  # base64
    shares: dict[str, dict[str, str]]  # member id -> {"box": base64 HPKE to the member, "digest": hex}


def issue(secrets: bytes, ledger: str, members: dict[str, bytes], threshold: int) -> IssuedSet:
    """Wrap `secrets` under a fresh recovery key and seal one share to each member's key."""
    key = os.urandom(RECOVERY_KEY_BYTES)
    wrapped = wrap_secrets(secrets, key, ledger)
    sid = set_id(wrapped)
    ids = sorted(members)
    shares = {}
    for member, share in zip(ids, split_key(key, threshold, len(ids)), strict=True):
        box = sealing.seal(share, members[member], member_context(ledger, sid, member))
        shares[member] = {"box": base64.b64encode(box).decode(), "digest": share_digest(ledger, sid, member, share)}
    return IssuedSet(sid, base64.b64encode(wrapped).decode(), shares)


def open_member_share(
    box_b64: str, key: x25519.X25519PrivateKey, ledger: str, set_id_: str, member: str, digest: str
) -> bytes:
    """A member's own share, opened with its encryption key and checked against the ledger's digest."""
    try:
        share = sealing.open_sealed(base64.b64decode(box_b64), key, member_context(ledger, set_id_, member))
    except (sealing.SealError, ValueError):
        raise RecoveryError("this share does not open with this member's encryption key", "wrong_key") from None
    if len(share) != SHARE_BYTES or share_digest(ledger, set_id_, member, share) != digest:
        raise RecoveryError("the share does not match the digest the ledger recorded", "bad_share")
    return share


def seal_to_node(share: bytes, node_key: bytes, ledger: str, set_id_: str, member: str, node: str) -> str:
    return base64.b64encode(sealing.seal(share, node_key, node_context(ledger, set_id_, member, node))).decode()


def open_at_node(
    box_b64: str, key: x25519.X25519PrivateKey, ledger: str, set_id_: str, member: str, node: str, digest: str
) -> bytes:
    """A submitted share, opened by the recovering node and checked against the set's digest."""
    try:
        share = sealing.open_sealed(base64.b64decode(box_b64), key, node_context(ledger, set_id_, member, node))
    except (sealing.SealError, ValueError):
        raise RecoveryError("the share is not sealed to this recovering node", "undecryptable_share") from None
    if len(share) != SHARE_BYTES or share_digest(ledger, set_id_, member, share) != digest:
        raise RecoveryError("the share does not match the digest in the share set", "bad_share")
    return share


def share_document(key: PrivateKey, ledger: str, set_id_: str, node: str, box: str, created_at: int) -> bytes:
    """The member-signed `recovery_share` governance document (COSE_Sign1)."""
    payload = canonical_json({"set": set_id_, "node": node, "box": box})
    headers: dict[Any, Any] = {
        cose.HDR_MSG_TYPE: MSG_RECOVERY_SHARE,
        cose.HDR_CREATED_AT: created_at,
        cose.HDR_LEDGER: ledger,
    }
    return cose.sign1(payload, key, headers)


def load_encryption_key(raw: bytes) -> x25519.X25519PrivateKey:
    """A member's encryption key file: 32 raw bytes, or their hex."""
    text = raw.strip()
    try:
        data = bytes.fromhex(text.decode()) if len(text) == 64 else raw
    except (UnicodeDecodeError, ValueError):
        data = raw
    if len(data) != 32:
        raise RecoveryError("an encryption key file holds a 32-byte X25519 private key (hex)", "bad_key")
    return sealing.load_private(data)
