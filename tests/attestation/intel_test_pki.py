"""A test PKI shaped like Intel's DCAP hierarchy, to exercise revocation and freshness.

No revoked Intel-signed PCK certificate exists to record, so tests re-sign a real quote under a
root they own: same header and TD/SGX body (optionally new report data), same QE report (re-bound
to a fresh attestation key), the real PCK leaf's SGX extension on a new leaf, and the real TCB info
and QE identity JSON re-signed over their exact bytes. `pin(monkeypatch)` makes the verifier trust
this root instead of the Intel SGX Root CA for the duration of one test.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from conclavium.attestation import roots
from conclavium.attestation.intel_quote import SGX_EXT_OID, parse_quote

NOT_BEFORE = datetime(2020, 1, 1)
NOT_AFTER = datetime(2040, 1, 1)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Conclavium test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _raw_sig(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class IntelTestPki:
    """Root, PCK Platform CA, TCB signer, and one PCK leaf per re-signed quote."""

    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    inter_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    signer_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        self.root = self._cert(
            _name("Test SGX Root CA"), self.root_key, _name("Test SGX Root CA"), self.root_key, ca=True
        )
        self.inter = self._cert(
            _name("Test SGX PCK Platform CA"), self.inter_key, self.root.subject, self.root_key, ca=True
        )
        self.signer = self._cert(_name("Test SGX TCB Signing"), self.signer_key, self.root.subject, self.root_key)
        self.leaf: x509.Certificate | None = None

    @staticmethod
    def _cert(
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        issuer_key: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        extension: bytes | None = None,
        serial: int | None = None,
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(serial or x509.random_serial_number())
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if extension is not None:
            b = b.add_extension(
                x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXT_OID), extension), critical=False
            )
        return b.sign(issuer_key, hashes.SHA256())

    def pin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Trust this root instead of Intel's for the current test."""
        monkeypatch.setattr(roots, "intel_root", lambda: self.root)
        fp = hashlib.sha256(self.root.public_bytes(serialization.Encoding.DER)).hexdigest()
        monkeypatch.setattr(roots, "INTEL_SGX_ROOT_CA_SHA256", fp)

    def requote(self, real: bytes, report_data: bytes | None = None, rtmrs: list[bytes] | None = None) -> bytes:
        """Re-sign a real v4/v5 TDX or v3 SGX quote under this PKI (optionally with new report data,
        and for TDX new RTMR0-3, e.g. what a test event log replays to)."""
        q = parse_quote(real)
        real_leaf = x509.load_pem_x509_certificates(q.pck_chain_pem.rstrip(b"\0"))[0]
        ext = real_leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXT_OID)).value.value  # type: ignore[attr-defined]
        self.leaf = self._cert(
            _name("Test SGX PCK Certificate"), self.leaf_key, self.inter.subject, self.inter_key, extension=ext
        )
        body = bytearray(q.body.raw)
        if report_data is not None:
            body[-64:] = report_data.ljust(64, b"\0")
        for i, rtmr in enumerate(rtmrs or []):
            body[328 + 48 * i : 376 + 48 * i] = rtmr
        header_len = len(q.signed) - len(q.body.raw)
        signed = q.signed[:header_len] + bytes(body)
        att_key = ec.generate_private_key(ec.SECP256R1())
        att_pub = att_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )[1:]
        qe = bytearray(q.qe_report.raw)
        qe[320:384] = hashlib.sha256(att_pub + q.qe_auth_data).digest() + b"\0" * 32
        chain = _pem(self.leaf) + _pem(self.inter) + _pem(self.root)
        inner = (
            bytes(qe)
            + _raw_sig(self.leaf_key, bytes(qe))
            + struct.pack("<H", len(q.qe_auth_data))
            + q.qe_auth_data
            + struct.pack("<HI", 5, len(chain))
            + chain
        )
        cert_data = inner if q.version == 3 else struct.pack("<HI", 6, len(inner)) + inner
        sig_data = _raw_sig(att_key, signed) + att_pub + cert_data
        return signed + struct.pack("<I", len(sig_data)) + sig_data

    def _resign(self, raw: bytes, key: str, dates: tuple[datetime, datetime] | None = None) -> bytes:
        text = raw.decode()
        if dates is not None:
            for field_name, when in zip(("issueDate", "nextUpdate"), dates, strict=True):
                stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
                text = re.sub(r'"' + field_name + r'"\s*:\s*"[^"]*"', f'"{field_name}":"{stamp}"', text, count=1)
        m = re.search(r'"' + key + r'"\s*:\s*', text)
        assert m is not None
        _, end = json.JSONDecoder().raw_decode(text, m.end())
        body = text[m.end() : end]
        return (
            '{"' + key + '":' + body + ',"signature":"' + _raw_sig(self.signer_key, body.encode()).hex() + '"}'
        ).encode()

    def crl(
        self,
        issuer: x509.Certificate,
        key: ec.EllipticCurvePrivateKey,
        last: datetime,
        next_: datetime,
        revoked: list[int],
    ) -> bytes:
        b = x509.CertificateRevocationListBuilder().issuer_name(issuer.subject).last_update(last).next_update(next_)
        for serial in revoked:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def collateral(
        self,
        real: dict[str, bytes],
        at: datetime,
        *,
        revoke_leaf: bool = False,
        revoke_inter: bool = False,
        crl_next_update: datetime | None = None,
        dates: tuple[datetime, datetime] | None = None,
    ) -> dict[str, bytes]:
        """The real TCB info and QE identity re-signed (with new `dates` = issueDate, nextUpdate if
        given), and CRLs issued a day before `at` and valid for 29 days (or until `crl_next_update`)."""
        assert self.leaf is not None, "requote first"
        at = at.replace(tzinfo=None)
        last, nxt = (
            at - timedelta(days=1),
            crl_next_update.replace(tzinfo=None) if crl_next_update else at + timedelta(days=29),
        )
        return {
            "tcb_info.json": self._resign(real["tcb_info.json"], "tcbInfo", dates),
            "qe_identity.json": self._resign(real["qe_identity.json"], "enclaveIdentity", dates),
            "tcb_signing_chain.pem": _pem(self.signer) + _pem(self.root),
            "root_ca_crl.der": self.crl(
                self.root, self.root_key, last, nxt, [self.inter.serial_number] if revoke_inter else []
            ),
            "pck_crl.der": self.crl(
                self.inter, self.inter_key, last, nxt, [self.leaf.serial_number] if revoke_leaf else []
            ),
        }
