"""Quorum privacy: party keys, the Tessera-compatible payload hash and the party endpoint's TLS
certificate (docs/quorum.md). Specified once here; the executor's party endpoint and governance use it.

Party keys are Tessera's: base64 of a 32-byte Curve25519 public key. Governance registers each one
with the user (or member) it acts for and the member whose executors serve it (`set_quorum_party`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import json

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conclavium.crypto.keys import PrivateKey, PublicKey

PARTIES_KEY = "quorum_parties"  # public:gov.service: {party key: {"owner": key id, "member": key id}}
MAX_PARTIES = 1000
MAX_PAYLOAD_BYTES = 256 * 1024  # a /storeraw payload (decoded)
PAYLOAD_HASH_TAG = b"conclavium.quorum.payload.v1"
TLS_VALIDITY = dt.timedelta(hours=24)
UPCHECK = "I'm up!"  # Tessera's exact answer; clients compare it


APP = "quorum"  # the application private transactions' entries name (`conclavium.apps`)
PREFIX = "quorum/"  # its maps, all private: sealed in snapshots, keyed in write digests
TX_GROUPS = PREFIX + "txs"  # private transaction hash -> group id
CONTRACTS = PREFIX + "contracts"  # private contract address -> group id
GROUPS = PREFIX + "groups"  # group id -> its sorted party keys
PAYLOADS = PREFIX + "payloads"  # payload hash (the marker's data, hex) -> private transaction hash
ENTRY_TAG = b"conclavium.quorum.private-entry.v1"  # what the submitting node signs, + the payload
SEAL_TAG = b"conclavium.quorum.private-payload.v1"  # HPKE info, + the marker transaction


TOKEN_TAG = b"conclavium.quorum.rpc-token.v1\n"  # what an access token's signature covers, + its claims
MAX_TOKEN_S = 7 * 86400  # the longest an access token may still be valid for


class PartyKeyError(ValueError):
    pass


class TokenError(ValueError):
    pass


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(key: PrivateKey, ledger: str, expires_s: int) -> str:
    """A bearer token for a party endpoint's JSON-RPC (`Authorization: Bearer <token>`): the
    owner's key id, the ledger and an expiry (Unix seconds), signed by the owner's key (the user
    or member governance tied party keys to). Like GoQuorum's JWTs, but signed by the party."""
    claims = json.dumps({"exp": expires_s, "ledger": ledger, "owner": key.key_id}, sort_keys=True).encode()
    return _b64url(claims) + "." + _b64url(key.sign(TOKEN_TAG + claims))


def verify_token(token: str, ledger: str, keys: dict[str, PublicKey], now_s: float) -> str:
    """The owner a token authenticates, or TokenError naming why not."""
    try:
        head, _, sig = token.partition(".")
        claims_raw, signature = _unb64url(head), _unb64url(sig)
        claims = json.loads(claims_raw)
        owner, exp, for_ledger = claims["owner"], claims["exp"], claims["ledger"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise TokenError("malformed access token") from None
    if for_ledger != ledger:
        raise TokenError("the access token is for another ledger")
    if type(exp) is not int or exp <= now_s:
        raise TokenError("the access token has expired")
    if exp > now_s + MAX_TOKEN_S:
        raise TokenError(f"an access token may be valid for at most {MAX_TOKEN_S} s")
    key = keys.get(owner) if isinstance(owner, str) else None
    if key is None or not key.verify(signature, TOKEN_TAG + claims_raw):
        raise TokenError("the access token is not signed by an active user or member")
    return str(owner)


class PrivateEntryError(ValueError):
    pass


def group_id(keys: list[str]) -> str:
    """The privacy group of a set of party keys (the sender's and privateFor)."""
    return hashlib.sha256(b"conclavium.quorum.group.v1\n" + "\n".join(sorted(set(keys))).encode()).hexdigest()[:32]


def group_map(gid: str, what: str) -> str:
    """A group's private Ethereum maps: accounts, code, storage.<address>, txs (outcomes)."""
    return f"{PREFIX}{gid}/{what}"


def entry_payload(node: str, marker: bytes, tx_key_id: str, sealed: bytes) -> bytes:
    """A private transaction's entry payload: the marker in clear (the public chain's record),
    the private part HPKE-sealed to the transaction key, and the submitting node. The entry's
    signature is the node's over ENTRY_TAG + this payload: only a member's own executors may say
    which of its party keys sent it."""
    return json.dumps(
        {"node": node, "marker": marker.hex(), "sealed": {"key": tx_key_id, "ct": base64.b64encode(sealed).decode()}},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


def parse_entry(payload: bytes) -> tuple[str, bytes, str, bytes]:
    """(node, marker, tx key id, sealed) of an entry payload, or PrivateEntryError."""
    try:
        d = json.loads(payload)
        node, marker, sealed = d["node"], bytes.fromhex(d["marker"]), d["sealed"]
        key, ct = sealed["key"], base64.b64decode(sealed["ct"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PrivateEntryError("malformed private transaction entry") from None
    if not isinstance(node, str) or not isinstance(key, str) or set(d) != {"node", "marker", "sealed"}:
        raise PrivateEntryError("malformed private transaction entry")
    return node, marker, key, ct


def private_part(payload: bytes, sender: str, recipients: list[str]) -> bytes:
    """What is sealed: the private payload (EVM input), privateFrom and privateFor."""
    return json.dumps(
        {"payload": base64.b64encode(payload).decode(), "from": sender, "for": recipients}, sort_keys=True
    ).encode()


def parse_private_part(plain: bytes) -> tuple[bytes, str, list[str]]:
    try:
        d = json.loads(plain)
        payload, sender, recipients = base64.b64decode(d["payload"], validate=True), d["from"], d["for"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PrivateEntryError("malformed private part") from None
    if not isinstance(recipients, list) or not recipients or len(recipients) > MAX_PARTIES:
        raise PrivateEntryError("privateFor must name 1 to 1000 party keys")
    try:
        party_key(sender)
        for k in recipients:
            party_key(k)
    except PartyKeyError as e:
        raise PrivateEntryError(str(e)) from None
    return payload, sender, recipients


def verify_entry(node_key: PublicKey, payload: bytes, signature: bytes) -> bool:
    return node_key.verify(signature, ENTRY_TAG + payload)


def party_key(value: object) -> str:
    """A Tessera public key: canonical standard base64 of 32 bytes."""
    if not isinstance(value, str) or len(value) != 44:
        raise PartyKeyError("a party key is the base64 of a 32-byte Curve25519 public key (44 characters)")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise PartyKeyError("a party key must be standard base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise PartyKeyError("a party key is the canonical base64 of exactly 32 bytes")
    return value


def payload_hash(salt: bytes, payload: bytes) -> bytes:
    """The 64-byte key `/storeraw` returns. Salted with 32 random bytes that never leave the
    executor, so the hash (which goes into a public transaction's data) is no dictionary oracle
    for a guessable payload, as Tessera's hash of a randomly-nonced ciphertext is not either."""
    return hashlib.sha3_512(PAYLOAD_HASH_TAG + salt + payload).digest()


def tls_certificate(
    service_key: PrivateKey, service_cert_pem: str, hosts: list[str], now: dt.datetime
) -> tuple[bytes, bytes]:
    """A fresh P-256 TLS key (PEM, PKCS#8) and its server certificate issued by the service key,
    so a client that pins the service certificate as its CA knows it reaches a trusted executor.
    The key is made here, in the executor, and never written in clear."""
    key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.load_pem_x509_certificate(service_cert_pem.encode())
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "conclavium quorum party endpoint")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + TLS_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(service_key.crypto_key, None)  # type: ignore[arg-type]
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)
