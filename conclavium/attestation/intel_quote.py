"""Intel DCAP ECDSA quotes: SGX v3, TDX v4/v5 (and SGX inside v4/v5), quote-level checks.

Quote level means everything the quote proves by itself: header, PCK chain to the pinned Intel SGX
Root CA, QE report signed by the PCK key, the attestation key bound into the QE report, and the quote
signed by the attestation key. TCB status needs collateral and lives in `intel_collateral.py`.
Parsing goes by the declared lengths; bytes after the signature data are counted, not ignored, so
policy can decide whether to tolerate them.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from . import roots
from ._x509 import check_validity, ecdsa_p256_raw_verify, fingerprint, load_certs, verify_signed_by
from .claims import VerificationError

INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
TEE_SGX = 0x00000000
TEE_TDX = 0x00000081
HEADER_SIZE = 48
SGX_BODY = 384
TD10_BODY = 584
TD15_BODY = 648
BODY_SIZES = {1: SGX_BODY, 2: TD10_BODY, 3: TD15_BODY}
SGX_EXT_OID = "1.2.840.113741.1.13.1"


def _fail(message: str) -> VerificationError:
    return VerificationError("header_and_cert_type", message)


@dataclass(frozen=True)
class EnclaveReport:
    """An SGX report body (the application enclave's, or the QE's)."""

    raw: bytes

    @property
    def cpusvn(self) -> bytes:
        return self.raw[0:16]

    @property
    def miscselect(self) -> int:
        return struct.unpack_from("<I", self.raw, 16)[0]

    @property
    def attributes(self) -> bytes:
        return self.raw[48:64]

    @property
    def debug(self) -> bool:
        return bool(self.raw[48] & 0x02)

    @property
    def mrenclave(self) -> bytes:
        return self.raw[64:96]

    @property
    def mrsigner(self) -> bytes:
        return self.raw[128:160]

    @property
    def config_id(self) -> bytes:
        return self.raw[192:256]

    @property
    def isvprodid(self) -> int:
        return struct.unpack_from("<H", self.raw, 256)[0]

    @property
    def isvsvn(self) -> int:
        return struct.unpack_from("<H", self.raw, 258)[0]

    @property
    def config_svn(self) -> int:
        return struct.unpack_from("<H", self.raw, 260)[0]

    @property
    def isv_family_id(self) -> bytes:
        return self.raw[304:320]

    @property
    def report_data(self) -> bytes:
        return self.raw[320:384]


@dataclass(frozen=True)
class TdReport:
    """A TD 1.0 (584 B) or TD 1.5 (648 B) report body."""

    raw: bytes

    tee_tcb_svn = property(lambda self: self.raw[0:16])
    mrseam = property(lambda self: self.raw[16:64])
    mrsignerseam = property(lambda self: self.raw[64:112])
    seam_attributes = property(lambda self: self.raw[112:120])
    td_attributes = property(lambda self: self.raw[120:128])
    xfam = property(lambda self: self.raw[128:136])
    mrtd = property(lambda self: self.raw[136:184])
    mrconfigid = property(lambda self: self.raw[184:232])
    mrowner = property(lambda self: self.raw[232:280])
    mrownerconfig = property(lambda self: self.raw[280:328])
    report_data = property(lambda self: self.raw[520:584])

    def rtmr(self, i: int) -> bytes:
        return self.raw[328 + 48 * i : 376 + 48 * i]

    @property
    def debug(self) -> bool:
        return bool(self.raw[120] & 0x01)

    @property
    def tee_tcb_svn2(self) -> bytes | None:
        return self.raw[584:600] if len(self.raw) == TD15_BODY else None

    @property
    def mrservicetd(self) -> bytes | None:
        return self.raw[600:648] if len(self.raw) == TD15_BODY else None


@dataclass
class PckInfo:
    """The SGX extensions of a PCK certificate."""

    ppid: bytes = b""
    cpusvn: bytes = b""
    comp_svn: list[int] = field(default_factory=lambda: [0] * 16)
    pcesvn: int = 0
    pceid: bytes = b""
    fmspc: bytes = b""
    sgx_type: int = 0
    platform_instance_id: bytes = b""


@dataclass
class Quote:
    """A parsed DCAP quote."""

    raw: bytes
    version: int
    att_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes
    body_type: int
    body: EnclaveReport | TdReport
    signed: bytes
    signature: bytes
    attestation_key: bytes
    qe_report: EnclaveReport
    qe_report_signature: bytes
    qe_auth_data: bytes
    pck_chain_pem: bytes
    trailing: bytes

    @property
    def is_tdx(self) -> bool:
        return isinstance(self.body, TdReport)


class _Reader:
    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _fail(f"quote truncated reading {what}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])


def parse_quote(data: bytes) -> Quote:
    """Parse a v3/v4/v5 quote strictly by its declared lengths."""
    if len(data) < HEADER_SIZE + 4:
        raise _fail("quote shorter than its header")
    version, key_type, tee_type, qe_svn, pce_svn = struct.unpack_from("<HHIHH", data, 0)
    if version not in (3, 4, 5):
        raise _fail(f"unsupported quote version {version}")
    if key_type != 2:
        raise _fail(f"attestation key type {key_type} is not 2 (ECDSA P-256)")
    if data[12:28] != INTEL_QE_VENDOR_ID:
        raise _fail("QE vendor id is not Intel's")
    r = _Reader(data, HEADER_SIZE, len(data))
    if version == 3:
        if tee_type != TEE_SGX:
            raise _fail("v3 quotes carry SGX report bodies only")
        body_type = 1
    elif version == 4:
        if tee_type not in (TEE_SGX, TEE_TDX):
            raise _fail(f"unknown TEE type {tee_type:#x}")
        body_type = 1 if tee_type == TEE_SGX else 2
    else:
        body_type = r.u16("body type")
        size = r.u32("body size")
        if BODY_SIZES.get(body_type) != size:
            raise _fail(f"v5 body type {body_type} with size {size} is not known")
        if (body_type == 1) != (tee_type == TEE_SGX) or tee_type not in (TEE_SGX, TEE_TDX):
            raise _fail("v5 body type does not match the TEE type")
    body_raw = r.take(BODY_SIZES[body_type], "report body")
    body: EnclaveReport | TdReport = EnclaveReport(body_raw) if body_type == 1 else TdReport(body_raw)
    signed = data[: r.pos]
    sig_len = r.u32("signature data length")
    sig_end = r.pos + sig_len
    if sig_end > len(data):
        raise _fail("signature data runs past the end of the quote")
    s = _Reader(data, r.pos, sig_end)
    signature = s.take(64, "quote signature")
    att_key = s.take(64, "attestation key")
    if version == 3:
        inner = s
    else:
        cert_type = s.u16("certification data type")
        size = s.u32("certification data size")
        if cert_type != 6:
            raise _fail(f"certification data type {cert_type} is not 6 (QE report)")
        inner = _Reader(data, s.pos, s.pos + size)
        s.take(size, "QE report certification data")
    qe_report = EnclaveReport(inner.take(SGX_BODY, "QE report"))
    qe_sig = inner.take(64, "QE report signature")
    auth = inner.take(inner.u16("QE auth data length"), "QE auth data")
    pck_type = inner.u16("PCK certification data type")
    if pck_type != 5:
        raise _fail(f"PCK certification data type {pck_type} is not 5 (PCK chain)")
    pck_chain = inner.take(inner.u32("PCK chain size"), "PCK chain")
    return Quote(
        raw=data,
        version=version,
        att_key_type=key_type,
        tee_type=tee_type,
        qe_svn=qe_svn if version == 3 else 0,
        pce_svn=pce_svn if version == 3 else 0,
        qe_vendor_id=data[12:28],
        user_data=data[28:48],
        body_type=body_type,
        body=body,
        signed=signed,
        signature=signature,
        attestation_key=att_key,
        qe_report=qe_report,
        qe_report_signature=qe_sig,
        qe_auth_data=auth,
        pck_chain_pem=pck_chain,
        trailing=data[sig_end:],
    )


def _der_items(data: bytes) -> list[tuple[int, bytes]]:
    """Split DER content into (tag, value) pairs; enough for the flat SGX extension."""
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        tag = data[i]
        length = data[i + 1]
        i += 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(data[i : i + n], "big")
            i += n
        if i + length > len(data):
            raise VerificationError("pck_extensions", "malformed DER in the PCK SGX extension")
        out.append((tag, data[i : i + length]))
        i += length
    return out


def _oid(raw: bytes) -> str:
    first = raw[0]
    parts = [str(min(first // 40, 2)), str(first - 40 * min(first // 40, 2))]
    value = 0
    for b in raw[1:]:
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(str(value))
            value = 0
    return ".".join(parts)


def _seq_map(content: bytes) -> dict[str, tuple[int, bytes]]:
    """SEQUENCE OF SEQUENCE { OID, value } -> {oid: (tag, value)}."""
    out: dict[str, tuple[int, bytes]] = {}
    for tag, item in _der_items(content):
        if tag != 0x30:
            continue
        parts = _der_items(item)
        if len(parts) == 2 and parts[0][0] == 0x06:
            out[_oid(parts[0][1])] = parts[1]
    return out


def pck_info(cert: x509.Certificate) -> PckInfo:
    """Decode OID 1.2.840.113741.1.13.1 (PPID, TCB, PCE-ID, FMSPC, SGX type, platform instance id)."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXT_OID))
    except x509.ExtensionNotFound as e:
        raise VerificationError("pck_extensions", "PCK certificate has no SGX extension") from e
    outer = _der_items(ext.value.value)  # type: ignore[attr-defined]
    if not outer or outer[0][0] != 0x30:
        raise VerificationError("pck_extensions", "SGX extension is not a SEQUENCE")
    items = _seq_map(outer[0][1])
    base = SGX_EXT_OID
    info = PckInfo()
    try:
        info.ppid = items[base + ".1"][1]
        tcb = _seq_map(items[base + ".2"][1])
        for i in range(16):
            info.comp_svn[i] = int.from_bytes(tcb[f"{base}.2.{i + 1}"][1], "big")
        info.pcesvn = int.from_bytes(tcb[f"{base}.2.17"][1], "big")
        info.cpusvn = tcb[f"{base}.2.18"][1]
        info.pceid = items[base + ".3"][1]
        info.fmspc = items[base + ".4"][1]
        info.sgx_type = int.from_bytes(items[base + ".5"][1], "big")
        if base + ".6" in items:
            info.platform_instance_id = items[base + ".6"][1]
    except KeyError as e:
        raise VerificationError("pck_extensions", f"PCK SGX extension lacks {e.args[0]}") from e
    return info


@dataclass
class QuoteVerification:
    """What the quote-level checks established, for the collateral step and for claims."""

    quote: Quote
    leaf: x509.Certificate
    intermediate: x509.Certificate
    root: x509.Certificate
    pck: PckInfo
    checks: dict[str, str] = field(default_factory=dict)


def verify_quote(data: bytes, *, at: datetime) -> QuoteVerification:
    """Run every quote-level check; raise `VerificationError` naming the first that fails."""
    quote = parse_quote(data)
    certs = load_certs(quote.pck_chain_pem, "header_and_cert_type")
    if len(certs) != 3:
        raise _fail(f"PCK chain has {len(certs)} certificates, expected leaf, intermediate, root")
    leaf, inter, root = certs
    pinned = roots.intel_root()
    if fingerprint(root) != roots.INTEL_SGX_ROOT_CA_SHA256:
        raise VerificationError("root_is_pinned_intel_root", "PCK chain root is not the Intel SGX Root CA")
    verify_signed_by(pinned, pinned, "root_self_signed")
    verify_signed_by(inter, pinned, "intermediate_signed_by_root")
    verify_signed_by(leaf, inter, "pck_leaf_signed_by_intermediate")
    check_validity((("Intel root", pinned), ("PCK intermediate", inter), ("PCK leaf", leaf)), at)
    leaf_key = leaf.public_key()
    if not isinstance(leaf_key, ec.EllipticCurvePublicKey):
        raise VerificationError("qe_report_signed_by_pck", "PCK key is not EC")
    if not ecdsa_p256_raw_verify(leaf_key, quote.qe_report_signature, quote.qe_report.raw):
        raise VerificationError("qe_report_signed_by_pck", "QE report signature does not verify with the PCK key")
    binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
    rd = quote.qe_report.report_data
    if rd[:32] != binding or any(rd[32:]):
        raise VerificationError(
            "qe_report_data_binds_attestation_key", "QE REPORTDATA is not SHA-256(attestation key || auth data)"
        )
    try:
        att_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
    except ValueError as e:
        raise VerificationError("quote_signed_by_attestation_key", "attestation key is not a P-256 point") from e
    if not ecdsa_p256_raw_verify(att_key, quote.signature, quote.signed):
        raise VerificationError(
            "quote_signed_by_attestation_key", "quote signature does not verify with the attestation key"
        )
    return QuoteVerification(quote, leaf, inter, root, pck_info(leaf))


def body_details(quote: Quote) -> dict[str, Any]:
    """Every body field, hex, for claims.details."""
    b = quote.body
    if isinstance(b, TdReport):
        out: dict[str, Any] = {
            "tee_tcb_svn": b.tee_tcb_svn.hex(),
            "mrseam": b.mrseam.hex(),
            "mrsignerseam": b.mrsignerseam.hex(),
            "seam_attributes": b.seam_attributes.hex(),
            "td_attributes": b.td_attributes.hex(),
            "xfam": b.xfam.hex(),
            "mrtd": b.mrtd.hex(),
            "mrconfigid": b.mrconfigid.hex(),
            "mrowner": b.mrowner.hex(),
            "mrownerconfig": b.mrownerconfig.hex(),
            **{f"rtmr{i}": b.rtmr(i).hex() for i in range(4)},
        }
        if b.tee_tcb_svn2 is not None and b.mrservicetd is not None:
            out["tee_tcb_svn2"] = b.tee_tcb_svn2.hex()
            out["mrservicetd"] = b.mrservicetd.hex()
        return out
    return {
        "cpusvn": b.cpusvn.hex(),
        "miscselect": b.miscselect,
        "attributes": b.attributes.hex(),
        "mrenclave": b.mrenclave.hex(),
        "mrsigner": b.mrsigner.hex(),
        "config_id": b.config_id.hex(),
        "isvprodid": b.isvprodid,
        "isvsvn": b.isvsvn,
        "config_svn": b.config_svn,
        "isv_family_id": b.isv_family_id.hex(),
    }
