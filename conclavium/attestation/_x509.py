"""Certificate helpers shared by the SNP and Intel verifiers (no I/O, explicit time)."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning

from .claims import VerificationError


def load_certs(data: bytes, check: str = "certificate_format") -> list[x509.Certificate]:
    """Load one DER certificate or any number of PEM certificates.

    AMD issues VCEK/VLEK certificates with serial number 0, which `cryptography` still loads but warns
    about; the warning is silenced here on purpose and a test pins the behaviour.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            if b"-----BEGIN CERTIFICATE-----" in data:
                return x509.load_pem_x509_certificates(data.rstrip(b"\x00"))
            return [x509.load_der_x509_certificate(data)]
    except (ValueError, TypeError) as e:
        raise VerificationError(check, f"cannot parse certificate: {e}") from e


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(der(cert)).hexdigest()


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def subject_cn(cert: x509.Certificate) -> str:
    """The subject's common name, for messages; `cryptography` parses names lazily, so a malformed
    one fails only when read."""
    try:
        return cn(cert.subject)
    except ValueError:
        return "?"


def check_validity(certs: Iterable[tuple[str, x509.Certificate]], at: datetime) -> None:
    """Every certificate must be valid at the verification time (inclusive bounds, as RFC 5280)."""
    for role, cert in certs:
        if at < cert.not_valid_before_utc:
            raise VerificationError(
                "certificate_validity", f"{role} ({cn(cert.subject)}) not valid before {cert.not_valid_before_utc}"
            )
        if at > cert.not_valid_after_utc:
            raise VerificationError(
                "certificate_validity", f"{role} ({cn(cert.subject)}) expired at {cert.not_valid_after_utc}"
            )


def verify_signed_by(cert: x509.Certificate, issuer: x509.Certificate, check: str) -> None:
    """Check issuer/subject names and the certificate signature (RSA-PSS, RSA PKCS#1 or ECDSA).
    `cryptography` parses names and keys lazily, so a malformed field fails here, as this check."""
    who = subject_cn(cert)
    try:
        names_match = cert.issuer == issuer.subject
        if not names_match:
            message = f"issuer {cert.issuer.rfc4514_string()} is not {issuer.subject.rfc4514_string()}"
        key = issuer.public_key()
    except (ValueError, TypeError) as e:
        raise VerificationError(check, f"certificate of {who} malformed: {e}") from e
    if not names_match:
        raise VerificationError(check, message)
    try:
        algo = cert.signature_hash_algorithm
        if algo is None:
            raise VerificationError(check, "certificate signature has no hash algorithm")
        if isinstance(key, rsa.RSAPublicKey):
            params = cert.signature_algorithm_parameters
            if isinstance(params, padding.PSS):
                # AMD: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48. Taken from the certificate so that
                # an unexpected parameter set fails the signature rather than being guessed.
                key.verify(cert.signature, cert.tbs_certificate_bytes, params, algo)
            else:
                key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(algo))
        else:
            raise VerificationError(check, f"unsupported issuer key {type(key).__name__}")
    except InvalidSignature as e:
        raise VerificationError(check, f"signature of {who} does not verify") from e
    except (ValueError, TypeError) as e:
        raise VerificationError(check, f"signature of {who} malformed: {e}") from e


def same_key(a: x509.Certificate, b: x509.Certificate) -> bool:
    return spki(a) == spki(b)


def ecdsa_p256_raw_verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Verify a raw r||s (big-endian, 32+32) ECDSA P-256/SHA-256 signature."""
    if len(signature) != 64 or not isinstance(key.curve, ec.SECP256R1):
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
