"""COSE_Sign1 (RFC 9052 section 4.2), the envelope of every governance document.

Kept deliberately small: one signer, attached payload, empty external AAD, and only the
algorithms `conclavium.crypto.keys` supports. Everything security relevant (alg, kid and
Conclavium's own headers) must be in the protected header, because only that part is signed.
Verification is strict so that every executor accepts exactly the same documents.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from conclavium.crypto.keys import Algorithm, PrivateKey, PublicKey

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_CRIT = 2
HDR_KID = 4

ALG_EDDSA = -8
ALG_ES256 = -7
ALG_ES384 = -35

ALG_IDS: dict[Algorithm, int] = {"Ed25519": ALG_EDDSA, "ES256": ALG_ES256, "ES384": ALG_ES384}
ALG_NAMES: dict[int, Algorithm] = {v: k for k, v in ALG_IDS.items()}

# Conclavium's own protected header labels (text labels, RFC 9052 section 3.1 allows tstr).
HDR_MSG_TYPE = "conclavium.gov.msg.type"
HDR_CREATED_AT = "conclavium.gov.msg.created_at"
HDR_PROPOSAL_ID = "conclavium.gov.msg.proposal_id"
# The ledger a document is for: executors refuse a document naming another ledger (or none), so a
# proposal or ballot cannot be replayed on another ledger whose members hold the same keys.
HDR_LEDGER = "conclavium.gov.msg.ledger"

MAX_DOCUMENT_BYTES = 1 << 20

ResolveKey = Callable[[str], PublicKey | None]


class CoseError(ValueError):
    """A COSE document that is malformed, unsupported, or not validly signed."""


@dataclass(frozen=True)
class Sign1:
    """A structurally valid, not yet verified COSE_Sign1 message."""

    protected_bstr: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes

    @property
    def alg(self) -> Algorithm:
        return ALG_NAMES[self.protected[HDR_ALG]]

    @property
    def kid(self) -> str:
        return _kid_text(self.protected[HDR_KID])


def sig_structure(protected_bstr: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes actually signed: Sig_structure for COSE_Sign1 (RFC 9052 section 4.4)."""
    return cbor2.dumps(["Signature1", protected_bstr, external_aad, payload])


def _kid_text(kid: object) -> str:
    if isinstance(kid, bytes):
        try:
            return kid.decode("ascii")
        except UnicodeDecodeError as e:
            raise CoseError("kid is not an ASCII key id") from e
    if isinstance(kid, str):
        return kid
    raise CoseError(f"kid must be a bstr or tstr, got {type(kid).__name__}")


def sign1(payload: bytes, key: PrivateKey, protected: Mapping[Any, Any] | None = None) -> bytes:
    """Sign `payload` as a tagged COSE_Sign1; alg and kid are filled in from `key`.

    kid is the signer's key id (hex SHA-256 of its SPKI) as ASCII bytes. The protected header is
    encoded canonically so the same inputs always give the same bytes (for Ed25519 the whole
    document is then deterministic, and so is its proposal id).
    """
    if not isinstance(payload, bytes):
        raise CoseError("payload must be bytes")
    headers: dict[Any, Any] = {HDR_ALG: ALG_IDS[key.alg], HDR_KID: key.key_id.encode("ascii")}
    for label, value in (protected or {}).items():
        if label in (HDR_ALG, HDR_KID):
            raise CoseError(f"header {label} is set from the key, do not pass it")
        headers[label] = value
    protected_bstr = cbor2.dumps(headers, canonical=True)
    signature = key.sign(sig_structure(protected_bstr, payload))
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bstr, {}, payload, signature]))


def parse1(data: bytes) -> Sign1:
    """Decode and check the structure of a COSE_Sign1 without verifying its signature.

    Useful for cheap pre-checks (the gateway) and as the first half of `verify1`.
    """
    if not isinstance(data, bytes | bytearray):
        raise CoseError("document must be bytes")
    if len(data) > MAX_DOCUMENT_BYTES:
        raise CoseError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    stream = io.BytesIO(bytes(data))
    try:
        obj = cbor2.CBORDecoder(stream).decode()
    except Exception as e:  # cbor2 raises several types for malformed input
        raise CoseError(f"not valid CBOR: {e}") from e
    if stream.tell() != len(data):
        raise CoseError(f"trailing bytes after the COSE_Sign1 message ({len(data) - stream.tell()})")
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        tag = obj.tag if isinstance(obj, cbor2.CBORTag) else "none"
        raise CoseError(f"expected COSE_Sign1 tag 18, got tag {tag}")
    msg = obj.value  # cbor2 decodes a tag's content with immutable containers (tuple, frozendict)
    if not isinstance(msg, list | tuple) or len(msg) != 4:
        raise CoseError("COSE_Sign1 must be an array of 4 items")
    protected_bstr, unprotected, payload, signature = msg
    if not isinstance(protected_bstr, bytes):
        raise CoseError("protected header must be a bstr")
    if not isinstance(unprotected, Mapping):
        raise CoseError("unprotected header must be a map")
    if payload is None:
        raise CoseError("detached payloads are not supported")
    if not isinstance(payload, bytes):
        raise CoseError("payload must be a bstr")
    if not isinstance(signature, bytes):
        raise CoseError("signature must be a bstr")
    if not protected_bstr:
        raise CoseError("protected header is empty (alg and kid must be protected)")
    try:
        pstream = io.BytesIO(protected_bstr)
        protected = cbor2.CBORDecoder(pstream).decode()
    except Exception as e:
        raise CoseError(f"protected header is not valid CBOR: {e}") from e
    if pstream.tell() != len(protected_bstr):
        raise CoseError("trailing bytes in the protected header")
    if not isinstance(protected, Mapping):
        raise CoseError("protected header must encode a map")
    if HDR_ALG in unprotected or HDR_KID in unprotected:
        raise CoseError("alg and kid must not be in the unprotected header")
    if HDR_CRIT in protected or HDR_CRIT in unprotected:
        raise CoseError("crit headers are not supported")
    if HDR_ALG not in protected:
        raise CoseError("protected header has no alg")
    alg = protected[HDR_ALG]
    if type(alg) is not int or alg not in ALG_NAMES:
        raise CoseError(f"unknown alg {alg!r} (supported: -8 EdDSA, -7 ES256, -35 ES384)")
    if HDR_KID not in protected:
        raise CoseError("protected header has no kid")
    _kid_text(protected[HDR_KID])
    return Sign1(protected_bstr, dict(protected), dict(unprotected), payload, signature)


def verify1(data: bytes, resolve_key: ResolveKey) -> tuple[dict[Any, Any], bytes]:
    """Verify a COSE_Sign1 and return (protected headers, payload).

    `resolve_key(kid)` returns the signer's public key or None when the kid is unknown.
    """
    msg = parse1(data)
    kid = msg.kid
    key = resolve_key(kid)
    if key is None:
        raise CoseError(f"unknown signer key id {kid}")
    if key.key_id != kid:
        raise CoseError(f"kid mismatch: header says {kid}, resolved key is {key.key_id}")
    if key.alg != msg.alg:
        raise CoseError(f"alg mismatch: header says {msg.alg}, signer key is {key.alg}")
    if not key.verify(msg.signature, sig_structure(msg.protected_bstr, msg.payload)):
        raise CoseError(f"bad signature by {kid}")
    return msg.protected, msg.payload
