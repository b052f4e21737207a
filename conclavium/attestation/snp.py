"""AMD SEV-SNP attestation report verification (report versions 2, 3 and 5).

Steps follow AMD's SEV-SNP ABI and the vectors README section 1: exact length, known version and
signature algorithm, ARK pinned and self-signed (RSA-PSS), ARK -> ASK/ASVK -> VCEK/VLEK, ECDSA P-384
over bytes 0x000..0x29F, REPORTED_TCB equal to the leaf's TCB extensions, CHIP_ID equal to the VCEK
hwID. Guest-policy bits, VMPL and minimum TCB are *reported* here and *judged* in `policy.py`.

Revocation: AMD's KDS publishes one CRL per product line and key type
(`/vcek/v1/{product}/crl`, `/vlek/v1/{product}/crl`), issued and signed (RSASSA-PSS/SHA-384) by the
ARK. Its scope is what the ARK issues, the ASK/ASVK; AMD does not revoke VCEKs (a TCB update
supersedes them, and every VCEK has serial 0). When the CRL is given it must be the ARK's and must
not list the chain's ASK/ASVK; its freshness is recorded and judged by the policy, which in
production refuses a report whose CRL was not checked.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import roots
from ._x509 import check_validity, cn, load_certs, same_key, verify_signed_by
from .claims import Claims, VerificationError, iso, require_aware

REPORT_SIZE = 0x4A0
SIGNED_SIZE = 0x2A0
SUPPORTED_VERSIONS = (2, 3, 4, 5)
AMD_OID = "1.3.6.1.4.1.3704.1"
OID_PRODUCT_NAME = AMD_OID + ".2"
OID_HWID = AMD_OID + ".4"
OID_CSP_ID = AMD_OID + ".5"
TCB_OIDS: dict[str, str] = {
    "bootloader": AMD_OID + ".3.1",
    "tee": AMD_OID + ".3.2",
    "snp": AMD_OID + ".3.3",
    "microcode": AMD_OID + ".3.8",
    "fmc": AMD_OID + ".3.9",
}
CPUID_PRODUCTS: dict[tuple[int, int], str] = {(0x19, 0x01): "Milan", (0x19, 0x11): "Genoa", (0x1A, 0x02): "Turin"}
SIGNING_KEYS = {0: "VCEK", 1: "VLEK"}
HCL_MAGIC = b"HCLA"
AMD_CRL = "amd_crl"  # collateral name (stem): amd_crl.der, as KDS serves it


def decode_tcb(raw: int, product: str) -> dict[str, int]:
    """Split a TCB_VERSION into SPLs; the byte layout differs between Milan/Genoa and Turin."""
    b = raw.to_bytes(8, "little")
    if product == "Turin":
        return {"fmc": b[0], "bootloader": b[1], "tee": b[2], "snp": b[3], "microcode": b[7]}
    return {"bootloader": b[0], "tee": b[1], "snp": b[6], "microcode": b[7]}


@dataclass(frozen=True)
class SnpReport:
    """The fields of an ATTESTATION_REPORT that verification and policy use."""

    raw: bytes
    version: int
    guest_svn: int
    policy: int
    family_id: bytes
    image_id: bytes
    vmpl: int
    signature_algo: int
    current_tcb: int
    platform_info: int
    signer_info: int
    report_data: bytes
    measurement: bytes
    host_data: bytes
    id_key_digest: bytes
    author_key_digest: bytes
    report_id: bytes
    report_id_ma: bytes
    reported_tcb: int
    cpuid: tuple[int, int, int]
    chip_id: bytes
    committed_tcb: int
    current_fw: str
    committed_fw: str
    launch_tcb: int
    signature_r: int
    signature_s: int

    @property
    def signing_key(self) -> int:
        return (self.signer_info >> 2) & 0x7

    @property
    def debug(self) -> bool:
        return bool(self.policy >> 19 & 1)

    def policy_bits(self) -> dict[str, int]:
        p = self.policy
        return {
            "abi_minor": p & 0xFF,
            "abi_major": (p >> 8) & 0xFF,
            "smt": (p >> 16) & 1,
            "reserved_bit17": (p >> 17) & 1,
            "migrate_ma": (p >> 18) & 1,
            "debug": (p >> 19) & 1,
            "single_socket": (p >> 20) & 1,
        }


def parse_report(data: bytes) -> SnpReport:
    """Parse a raw 1184-byte report; any other length is refused (as CCF does)."""
    if len(data) != REPORT_SIZE:
        raise VerificationError("report_length", f"SNP report must be {REPORT_SIZE} bytes, got {len(data)}")
    version, guest_svn, policy = struct.unpack_from("<IIQ", data, 0)
    if version not in SUPPORTED_VERSIONS:
        raise VerificationError("report_version", f"unsupported SNP report version {version}")
    vmpl, sig_algo, current_tcb, platform_info, signer_info = struct.unpack_from("<IIQQI", data, 0x30)
    if sig_algo != 1:
        raise VerificationError("signature_algo", f"SIGNATURE_ALGO {sig_algo} is not 1 (ECDSA P-384/SHA-384)")
    cpuid = (data[0x188], data[0x189], data[0x18A]) if version >= 3 else (0, 0, 0)
    return SnpReport(
        raw=data,
        version=version,
        guest_svn=guest_svn,
        policy=policy,
        family_id=data[0x10:0x20],
        image_id=data[0x20:0x30],
        vmpl=vmpl,
        signature_algo=sig_algo,
        current_tcb=current_tcb,
        platform_info=platform_info,
        signer_info=signer_info,
        report_data=data[0x50:0x90],
        measurement=data[0x90:0xC0],
        host_data=data[0xC0:0xE0],
        id_key_digest=data[0xE0:0x110],
        author_key_digest=data[0x110:0x140],
        report_id=data[0x140:0x160],
        report_id_ma=data[0x160:0x180],
        reported_tcb=struct.unpack_from("<Q", data, 0x180)[0],
        cpuid=cpuid,
        chip_id=data[0x1A0:0x1E0],
        committed_tcb=struct.unpack_from("<Q", data, 0x1E0)[0],
        current_fw=f"{data[0x1EA]}.{data[0x1E9]}.{data[0x1E8]}",
        committed_fw=f"{data[0x1EE]}.{data[0x1ED]}.{data[0x1EC]}",
        launch_tcb=struct.unpack_from("<Q", data, 0x1F0)[0],
        signature_r=int.from_bytes(data[0x2A0:0x2E8], "little"),
        signature_s=int.from_bytes(data[0x2E8:0x330], "little"),
    )


def _unwrap_hcl(evidence: bytes) -> tuple[bytes, dict[str, Any]]:
    """Azure CVM 'HCL report': the SNP report at 0x20 binds SHA-2 of the runtime data in REPORT_DATA."""
    if len(evidence) < 0x4D4:
        raise VerificationError("hcl_format", "HCL report too short")
    report = evidence[0x20 : 0x20 + REPORT_SIZE]
    _size, _ver, report_type, hash_type, var_size = struct.unpack_from("<IIIII", evidence, 0x4C0)
    var = evidence[0x4D4 : 0x4D4 + var_size]
    if report_type != 2 or len(var) != var_size:
        raise VerificationError("hcl_format", "HCL report is not an SNP report or is truncated")
    algo = {1: hashlib.sha256, 2: hashlib.sha384, 3: hashlib.sha512}.get(hash_type)
    if algo is None:
        raise VerificationError("hcl_format", f"unknown HCL hash type {hash_type}")
    digest = algo(var).digest()
    n = min(len(digest), 64)
    if report[0x50 : 0x50 + n] != digest[:n]:
        raise VerificationError(
            "azure_hcl_runtime_data_sha256_in_report_data", "HCL runtime data hash is not in REPORT_DATA"
        )
    return report, {"hcl_runtime_data": var.decode("utf-8", "replace"), "hcl_trailing_bytes": 0}


def _classify(certs: Sequence[bytes]) -> dict[str, x509.Certificate]:
    """Sort the supplied certificates into leaf / intermediate / ark by their subject CN."""
    found: dict[str, x509.Certificate] = {}
    for blob in certs:
        for cert in load_certs(blob):
            name = cn(cert.subject)
            role = (
                "leaf"
                if name in ("SEV-VCEK", "SEV-VLEK")
                else "ark"
                if name.startswith("ARK-")
                else "intermediate"
                if name.startswith("SEV-")
                else None
            )
            if role is None:
                raise VerificationError("certificate_role", f"unexpected certificate {name!r}")
            if role in found and found[role].subject != cert.subject:
                raise VerificationError("certificate_role", f"more than one {role} certificate given")
            found[role] = cert
    return found


def _ext_int(leaf: x509.Certificate, oid: str) -> int | None:
    try:
        raw = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value  # type: ignore[attr-defined]
    except x509.ExtensionNotFound:
        return None
    if len(raw) < 3 or raw[0] != 0x02 or raw[1] != len(raw) - 2:
        raise VerificationError("reported_tcb_matches_leaf", f"extension {oid} is not a DER INTEGER")
    return int.from_bytes(raw[2:], "big", signed=True)


def _ext_raw(leaf: x509.Certificate, oid: str) -> bytes | None:
    try:
        return leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value.value  # type: ignore[attr-defined]
    except x509.ExtensionNotFound:
        return None


def _ia5(raw: bytes | None) -> str:
    if raw and len(raw) >= 2 and raw[0] == 0x16:
        return raw[2:].decode("ascii", "replace")
    return ""


@dataclass(frozen=True)
class AmdChain:
    """A verified ARK -> ASK/ASVK -> VCEK/VLEK chain."""

    ark: x509.Certificate
    intermediate: x509.Certificate
    leaf: x509.Certificate
    product: str
    kind: str


def verify_amd_chain(certs: Sequence[bytes], *, at: datetime) -> AmdChain:
    """Verify a VCEK/VLEK up to the pinned ARK of its product line (the product comes from its issuer).

    A supplied ARK must be the pinned one; a supplied ASK/ASVK must be signed by it; absent ones come
    from the pinned bundle. All signatures are RSASSA-PSS/SHA-384.
    """
    require_aware(at)
    given = _classify(certs)
    leaf = given.get("leaf")
    if leaf is None:
        raise VerificationError("leaf_certificate", "no VCEK or VLEK certificate given")
    kind = "vcek" if cn(leaf.subject) == "SEV-VCEK" else "vlek"
    issuer = cn(leaf.issuer)
    prefix = "SEV-VLEK-" if kind == "vlek" else "SEV-"
    product = issuer[len(prefix) :] if issuer.startswith(prefix) else ""
    if product not in roots.PRODUCTS:
        raise VerificationError("leaf_issuer", f"leaf issuer {issuer!r} is not a known AMD {kind} signer")
    ark, ask = roots.amd_chain(product, kind)
    if "ark" in given and not same_key(given["ark"], ark):
        raise VerificationError("ark_pinned", f"supplied ARK is not the pinned ARK-{product}")
    verify_signed_by(ark, ark, "ark_self_signed_pss")
    ask = given.get("intermediate", ask)
    verify_signed_by(ask, ark, "ask_signed_by_ark")
    verify_signed_by(leaf, ask, "leaf_signed_by_ask")
    check_validity((("ARK", ark), ("ASK/ASVK", ask), (kind.upper(), leaf)), at)
    return AmdChain(ark, ask, leaf, product, kind)


def leaf_product(certs: Sequence[bytes]) -> tuple[str, str] | None:
    """(product, 'vcek'|'vlek') named by the leaf's issuer, or None: what a CRL lookup needs."""
    try:
        leaf = _classify(certs).get("leaf")
    except VerificationError:
        return None
    if leaf is None:
        return None
    kind = "vcek" if cn(leaf.subject) == "SEV-VCEK" else "vlek"
    issuer = cn(leaf.issuer)
    prefix = "SEV-VLEK-" if kind == "vlek" else "SEV-"
    product = issuer[len(prefix) :] if issuer.startswith(prefix) else ""
    return (product, kind) if product in roots.PRODUCTS else None


def amd_crl_from(collateral: Mapping[str, bytes] | None) -> bytes | None:
    """The AMD CRL among collateral files named like `amd_crl.der` (any folder, any extension)."""
    for name, data in (collateral or {}).items():
        if name.rsplit("/", 1)[-1].split(".", 1)[0] == AMD_CRL:
            return data
    return None


def check_amd_crl(data: bytes, chain: AmdChain) -> dict[str, str]:
    """Verify the KDS CRL against the chain's ARK and that it does not revoke the ASK/ASVK.

    Returns its issue and next-update times; judging them against the verification time is the
    caller's (stale is reported, and the policy refuses it).
    """
    check = "amd_crl_signed_and_not_revoked"
    try:
        crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        issuer_ok = crl.issuer == chain.ark.subject
        params = crl.signature_algorithm_parameters
        algo = crl.signature_hash_algorithm
        last, nxt = crl.last_update_utc, crl.next_update_utc
    except (ValueError, TypeError) as e:
        raise VerificationError(check, f"cannot parse the AMD CRL: {e}") from e
    if not issuer_ok:
        raise VerificationError(check, f"the AMD CRL is not issued by ARK-{chain.product}")
    key = chain.ark.public_key()
    if (
        not isinstance(params, padding.PSS)
        or not isinstance(algo, hashes.SHA384)
        or not isinstance(key, rsa.RSAPublicKey)
    ):
        raise VerificationError(check, "the AMD CRL is not signed with RSASSA-PSS/SHA-384 by the ARK")
    try:
        key.verify(crl.signature, crl.tbs_certlist_bytes, params, algo)
    except (InvalidSignature, ValueError) as e:
        raise VerificationError(check, f"the AMD CRL signature does not verify with ARK-{chain.product}") from e
    if nxt is None:
        raise VerificationError(check, "the AMD CRL has no next update time")
    revoked = crl.get_revoked_certificate_by_serial_number(chain.intermediate.serial_number)
    if revoked is not None:
        raise VerificationError(
            check,
            f"{cn(chain.intermediate.subject)} (serial {chain.intermediate.serial_number:#x}) is revoked by the "
            f"ARK-{chain.product} CRL since {iso(revoked.revocation_date_utc)}",
        )
    return {"issue_date": iso(last), "next_update": iso(nxt)}


def _crl_freshness(crl: dict[str, str], at: datetime, certs_expire: datetime) -> dict[str, Any]:
    issued = datetime.fromisoformat(crl["issue_date"].replace("Z", "+00:00"))
    nxt = datetime.fromisoformat(crl["next_update"].replace("Z", "+00:00"))
    stale = []
    if at > nxt:
        stale.append(f"amd_crl expired at {crl['next_update']}")
    if at < issued:
        stale.append(f"amd_crl issued after the verification time ({crl['issue_date']})")
    return {
        AMD_CRL: crl,
        "expires_at": iso(min(nxt, certs_expire)),
        "oldest_issue_date": crl["issue_date"],
        "fresh": not stale,
        "stale": stale,
    }


def verify_snp(
    evidence: bytes, *, certs: Sequence[bytes] = (), collateral: Mapping[str, bytes] | None = None, at: datetime
) -> Claims:
    """Verify an SNP report (or Azure HCL report) against the pinned AMD roots at time `at`.

    `certs` holds the VCEK or VLEK (required: the report does not carry it) and optionally the ASK/ASVK
    and ARK, PEM or DER; absent intermediates come from the pinned bundle for the leaf's product.
    `collateral` may hold the KDS CRL (`amd_crl.der`), checked by `check_amd_crl`.
    """
    require_aware(at)
    extra: dict[str, Any] = {}
    if evidence[:4] == HCL_MAGIC:
        evidence, extra = _unwrap_hcl(evidence)
    report = parse_report(evidence)
    if report.signing_key not in SIGNING_KEYS:
        raise VerificationError("signing_key", f"SIGNING_KEY {report.signing_key} is reserved or means 'no signature'")
    chain = verify_amd_chain(certs, at=at)
    leaf, ark, ask, product, leaf_kind = chain.leaf, chain.ark, chain.intermediate, chain.product, chain.kind
    if SIGNING_KEYS[report.signing_key].lower() != leaf_kind:
        raise VerificationError(
            "signing_key_matches_leaf_type",
            f"report says {SIGNING_KEYS[report.signing_key]} but the leaf is {leaf_kind.upper()}",
        )
    cpuid_product = CPUID_PRODUCTS.get(report.cpuid[:2])
    if report.version >= 3 and any(report.cpuid) and cpuid_product != product:
        raise VerificationError("cpuid_matches_product", f"CPUID {report.cpuid} is not a {product} processor")

    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP384R1):
        raise VerificationError("leaf_key_type", "VCEK/VLEK key is not EC P-384")
    try:
        key.verify(
            encode_dss_signature(report.signature_r, report.signature_s),
            report.raw[:SIGNED_SIZE],
            ec.ECDSA(hashes.SHA384()),
        )
    except (InvalidSignature, ValueError) as e:
        raise VerificationError("report_signature", "report signature does not verify with the leaf key") from e

    reported = decode_tcb(report.reported_tcb, product)
    for name, value in reported.items():
        ext = _ext_int(leaf, TCB_OIDS[name])
        if ext is not None and ext != value:
            raise VerificationError(
                "reported_tcb_matches_leaf", f"REPORTED_TCB {name}={value} but the {leaf_kind.upper()} says {ext}"
            )
        if ext is None and name != "fmc":
            raise VerificationError("reported_tcb_matches_leaf", f"leaf has no {name} SPL extension")
    if leaf_kind == "vcek" and any(report.chip_id):
        hwid = _ext_raw(leaf, OID_HWID)
        if hwid is None:
            raise VerificationError("chip_id_matches_hwid", "VCEK has no hwID extension")
        want = report.chip_id[:8] if product == "Turin" else report.chip_id
        if hwid != want:
            raise VerificationError("chip_id_matches_hwid", "CHIP_ID differs from the VCEK hwID")

    certs_expire = min(c.not_valid_after_utc for c in (ark, ask, leaf))
    crl_data = amd_crl_from(collateral)
    col: dict[str, Any] = {"expires_at": iso(certs_expire)}
    reasons: list[str] = []
    if crl_data is not None:
        col = _crl_freshness(check_amd_crl(crl_data, chain), at, certs_expire)
        reasons += [f"collateral stale: {s}" for s in col.pop("stale")]
    else:
        reasons.append("no AMD CRL: revocation of the ASK/ASVK not checked")
    if report.debug:
        reasons.append("debug: guest policy allows debugging (POLICY bit 19)")
    if not any(report.chip_id):
        reasons.append("chip_id masked by the host (all zeros)")
    if report.current_tcb != report.reported_tcb:
        reasons.append("current_tcb differs from reported_tcb")
    details: dict[str, Any] = {
        "version": report.version,
        "signing_key": SIGNING_KEYS[report.signing_key],
        "vmpl": report.vmpl,
        "guest_svn": report.guest_svn,
        "policy": f"{report.policy:#x}",
        "policy_bits": report.policy_bits(),
        "platform_info": f"{report.platform_info:#x}",
        "family_id": report.family_id.hex(),
        "image_id": report.image_id.hex(),
        "id_key_digest": report.id_key_digest.hex(),
        "author_key_digest": report.author_key_digest.hex(),
        "report_id": report.report_id.hex(),
        "report_id_ma": report.report_id_ma.hex(),
        "current_tcb": decode_tcb(report.current_tcb, product),
        "committed_tcb": decode_tcb(report.committed_tcb, product),
        "launch_tcb": decode_tcb(report.launch_tcb, product),
        "reported_tcb_raw": f"{report.reported_tcb:#018x}",
        "current_fw": report.current_fw,
        "committed_fw": report.committed_fw,
        "cpuid": list(report.cpuid),
        "leaf": {
            "subject": leaf.subject.rfc4514_string(),
            "issuer": leaf.issuer.rfc4514_string(),
            "not_after": iso(leaf.not_valid_after_utc),
            "product_name": _ia5(_ext_raw(leaf, OID_PRODUCT_NAME)),
            "csp_id": _ia5(_ext_raw(leaf, OID_CSP_ID)),
        },
        "collateral": col,
        **extra,
    }
    return Claims(
        platform="snp",
        measurement=report.measurement.hex(),
        host_data=report.host_data.hex(),
        report_data=report.report_data.hex(),
        tcb=reported,
        debug=report.debug,
        chip_id=report.chip_id.hex(),
        status="Unknown",
        reasons=reasons,
        product=product,
        verified_at=iso(at),
        details=details,
    )
