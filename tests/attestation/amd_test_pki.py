"""A test PKI shaped like AMD's SEV-SNP hierarchy, to exercise the KDS CRL (revocation, freshness).

AMD's CRL cannot be fetched here and no revoked ASK exists to record, so tests re-sign a real report
under an ARK they own: an RSA ARK and ASK/ASVK (RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48, as AMD
signs), a new VCEK/VLEK on P-384 carrying the real leaf's extensions (product name, TCB SPLs, hwID),
the real report's bytes (optionally new report data) signed by it, and CRLs issued by the ARK.
The subject names are AMD's (`ARK-Milan`, `SEV-Milan`, `SEV-VCEK`), because the verifier picks
product and role from them. `pin(monkeypatch)` makes the verifier trust this ARK and ASK instead of
AMD's for the duration of one test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from conclavium.attestation import roots
from conclavium.attestation.snp import SIGNED_SIZE

NOT_BEFORE = datetime(2020, 1, 1)
NOT_AFTER = datetime(2045, 1, 1)
PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Conclavium test PKI"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def load_leaf(data: bytes) -> x509.Certificate:
    """A real VCEK/VLEK (serial 0, which `cryptography` loads with a warning)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)


@dataclass
class AmdTestPki:
    """ARK, ASK (kind 'vcek') or ASVK (kind 'vlek') for one product line, and one leaf per re-signed report."""

    product: str = "Milan"
    kind: str = "vcek"
    ark_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 4096))
    ask_key: rsa.RSAPrivateKey = field(default_factory=lambda: rsa.generate_private_key(65537, 4096))
    leaf_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP384R1()))

    def __post_init__(self) -> None:
        ark_name = _name(f"ARK-{self.product}")
        self.ark = self._cert(ark_name, self.ark_key.public_key(), ark_name, self.ark_key, serial=0x10000, ca=True)
        inter = f"SEV-VLEK-{self.product}" if self.kind == "vlek" else f"SEV-{self.product}"
        self.ask = self._cert(_name(inter), self.ask_key.public_key(), ark_name, self.ark_key, serial=0x10001, ca=True)
        self.leaf: x509.Certificate | None = None

    @staticmethod
    def _cert(
        subject: x509.Name,
        public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
        issuer: x509.Name,
        issuer_key: rsa.RSAPrivateKey,
        *,
        serial: int,
        ca: bool = False,
        extensions: list[x509.Extension[x509.ExtensionType]] = (),  # type: ignore[assignment]
    ) -> x509.Certificate:
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(NOT_BEFORE)
            .not_valid_after(NOT_AFTER)
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for ext in extensions:
            if not isinstance(ext.value, x509.BasicConstraints):
                b = b.add_extension(ext.value, critical=ext.critical)
        return b.sign(issuer_key, hashes.SHA384(), rsa_padding=PSS)

    def pin(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Trust this ARK (and ASK/ASVK) instead of AMD's for the current test."""
        real = roots.amd_chain

        def chain(product: str, kind: str) -> tuple[x509.Certificate, x509.Certificate]:
            if (product, kind) == (self.product, self.kind):
                return self.ark, self.ask
            return real(product, kind)

        monkeypatch.setattr(roots, "amd_chain", chain)

    def resign(self, report: bytes, real_leaf: bytes, report_data: bytes | None = None) -> bytes:
        """The real report (optionally with new REPORT_DATA) signed by a new leaf that carries the
        real leaf's extensions; `self.leaf` is that leaf."""
        real = load_leaf(real_leaf)
        leaf_cn = "SEV-VLEK" if self.kind == "vlek" else "SEV-VCEK"
        self.leaf = self._cert(
            _name(leaf_cn),
            self.leaf_key.public_key(),
            self.ask.subject,
            self.ask_key,
            serial=1,
            extensions=list(real.extensions),
        )
        body = bytearray(report)
        if report_data is not None:
            body[0x50:0x90] = report_data.ljust(64, b"\0")
        r, s = decode_dss_signature(self.leaf_key.sign(bytes(body[:SIGNED_SIZE]), ec.ECDSA(hashes.SHA384())))
        body[0x2A0:0x4A0] = r.to_bytes(72, "little") + s.to_bytes(72, "little") + b"\0" * (0x200 - 144)
        return bytes(body)

    def certs(self) -> dict[str, bytes]:
        assert self.leaf is not None, "resign first"
        name = "vlek.der" if self.kind == "vlek" else "vcek.der"
        return {name: der(self.leaf), "ask.der": der(self.ask), "ark.der": der(self.ark)}

    def crl(
        self,
        at: datetime,
        *,
        revoke_ask: bool = False,
        next_update: datetime | None = None,
        last_update: datetime | None = None,
        key: rsa.RSAPrivateKey | None = None,
        rsa_padding: padding.PSS | padding.PKCS1v15 = PSS,
        revoked: list[int] = (),  # type: ignore[assignment]
    ) -> bytes:
        """A DER CRL as KDS serves it, issued by the ARK a day before `at`, valid 7 days (or as given)."""
        at = at.replace(tzinfo=None)
        last = last_update.replace(tzinfo=None) if last_update else at - timedelta(days=1)
        nxt = next_update.replace(tzinfo=None) if next_update else at + timedelta(days=6)
        b = x509.CertificateRevocationListBuilder().issuer_name(self.ark.subject).last_update(last).next_update(nxt)
        for serial in [*revoked, *([self.ask.serial_number] if revoke_ask else [])]:
            b = b.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(last).build()
            )
        crl = b.sign(key or self.ark_key, hashes.SHA384(), rsa_padding=rsa_padding)
        return crl.public_bytes(serialization.Encoding.DER)
