"""Service and node certificates.

The service identity is a key created inside the first executor at genesis and shared only with
trusted executors; its self-signed certificate is what users pin. Each trusted node's signing key
is endorsed by a certificate the service key issues, so a receipt verifier needs only the service
certificate to know which node signatures count.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from conclavium.crypto.keys import PrivateKey, PublicKey

VALIDITY = dt.timedelta(days=3650)
SERVICE_CN_PREFIX = "conclavium service "  # + the ledger id: the service certificate's subject


class CertificateError(ValueError):
    pass


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _serial(seed: bytes) -> int:
    return int.from_bytes(hashlib.sha256(seed).digest()[:16], "big") >> 1


def service_certificate(key: PrivateKey, ledger: str, not_before: dt.datetime) -> str:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(SERVICE_CN_PREFIX + ledger))
        .issuer_name(_name(SERVICE_CN_PREFIX + ledger))
        .public_key(key.crypto_key.public_key())  # type: ignore[attr-defined]
        .serial_number(_serial(key.public_key.spki))
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    cert = builder.sign(key.crypto_key, None)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def node_certificate(
    service_key: PrivateKey, service_cert_pem: str, node_key: PublicKey, not_before: dt.datetime
) -> str:
    issuer = x509.load_pem_x509_certificate(service_cert_pem.encode())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(node_key.key_id))
        .issuer_name(issuer.subject)
        .public_key(node_key.crypto_key)  # type: ignore[arg-type]
        .serial_number(_serial(node_key.spki))
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    cert = builder.sign(service_key.crypto_key, None)  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def load_cert(pem: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem.encode())
    except ValueError as e:
        raise CertificateError(f"malformed certificate: {e}") from None


def service_ledger(service_cert_pem: str) -> str:
    """The ledger id a service certificate names (its subject is "conclavium service LEDGER")."""
    names = load_cert(service_cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if names else ""
    if not isinstance(cn, str) or not cn.startswith(SERVICE_CN_PREFIX):
        raise CertificateError("not a service certificate (no ledger in its subject)")
    return cn[len(SERVICE_CN_PREFIX) :]


def verify_node_certificate(node_cert_pem: str, service_cert: x509.Certificate) -> PublicKey:
    """The node key the service endorsed with this certificate, or CertificateError."""
    cert = load_cert(node_cert_pem)
    try:
        cert.verify_directly_issued_by(service_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError("node certificate is not issued by the service certificate") from None
    key = PublicKey.from_crypto(cert.public_key())
    if cert.subject != _name(key.key_id):
        raise CertificateError("node certificate subject does not name its key")
    return key


def self_signed_certificate(key: PrivateKey, common_name: str, not_before: dt.datetime) -> str:
    """A certificate for a member's or user's own key, for tools that want X.509."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.crypto_key.public_key())  # type: ignore[attr-defined]
        .serial_number(_serial(key.public_key.spki + common_name.encode()))
        .not_valid_before(not_before)
        .not_valid_after(not_before + VALIDITY)
    )
    cert = builder.sign(key.crypto_key, None if key.alg == "Ed25519" else _hash_for(key.alg))  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _hash_for(alg: str) -> hashes.HashAlgorithm:
    return hashes.SHA384() if alg == "ES384" else hashes.SHA256()


TX_KEY_DOMAIN = b"conclavium.tx-key.v1\x00"


def tx_key_statement(ledger: str, key_id: str, public_hex: str) -> bytes:
    """What the service key signs to vouch for a transaction key, so clients seal only to keys
    the attested executors hold."""
    return TX_KEY_DOMAIN + f"{ledger}|{key_id}|{public_hex}".encode()


def sign_tx_key(service_key: PrivateKey, ledger: str, key_id: str, public: bytes) -> dict[str, str]:
    stmt = tx_key_statement(ledger, key_id, public.hex())
    return {"id": key_id, "public": public.hex(), "signature": base64.b64encode(service_key.sign(stmt)).decode()}


def verify_tx_key(doc: dict[str, str], ledger: str, service_cert_pem: str) -> bytes:
    """The X25519 public key of a transaction-key document signed by the service; else CertificateError."""
    try:
        public = bytes.fromhex(doc["public"])
        sig = base64.b64decode(doc["signature"], validate=True)
        stmt = tx_key_statement(ledger, doc["id"], doc["public"])
    except (KeyError, TypeError, ValueError):
        raise CertificateError("malformed transaction key document") from None
    key = PublicKey.from_crypto(load_cert(service_cert_pem).public_key())
    if len(public) != 32 or not key.verify(sig, stmt):
        raise CertificateError("transaction key is not signed by the service identity")
    return public
