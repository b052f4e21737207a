"""Evidence providers: how an executor obtains evidence binding its keys from the TEE it runs in.

These are the only parts of the package that touch the file system; roots are configurable so
tests can fake the kernel interfaces with a directory tree. `detect_provider` picks the first
interface present; `virtual` is never picked unless explicitly allowed.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .virtual import make_virtual_evidence

CONFIGFS_TSM_ROOT = "/sys/kernel/config/tsm/report"
SEV_GUEST_DEVICE = "/dev/sev-guest"
GRAMINE_ROOT = "/dev/attestation"
# TDVF's event log, as Linux exposes the ACPI CCEL table's log area.
CCEL_DATA = "/sys/firmware/acpi/tables/data/CCEL"

# GUIDs of the SNP extended-report certificate table (GHCB spec / SEV-SNP ABI).
SNP_CERT_GUIDS: dict[str, str] = {
    "63da758d-e664-4564-adc5-f4b93be8accd": "vcek.der",
    "a8074bc2-a25a-483e-aae6-39c045a0b8a1": "vlek.der",
    "4ab7b379-bbac-4fe4-a02f-05aef327c782": "ask.der",
    "c0b406a4-a803-4952-9743-3fb6014cd0ae": "ark.der",
}
TSM_PROVIDERS = {"sev_guest": "snp", "tdx_guest": "tdx"}


class ProviderError(RuntimeError):
    """The TEE interface is missing or failed to produce evidence."""


@dataclass
class Evidence:
    """Evidence as the verifier wants it: platform, raw bytes, and certificates shipped with it."""

    platform: str
    evidence: bytes
    certs: dict[str, bytes] = field(default_factory=dict)
    event_log: bytes = b""


def parse_snp_cert_table(blob: bytes) -> dict[str, bytes]:
    """Split an SNP certificate table ({GUID, offset u32, length u32}..., zero GUID) into files."""
    out: dict[str, bytes] = {}
    pos = 0
    while pos + 24 <= len(blob):
        guid_raw = blob[pos : pos + 16]
        offset, length = struct.unpack_from("<II", blob, pos + 16)
        pos += 24
        if not any(guid_raw):
            break
        guid = str(uuid.UUID(bytes_le=guid_raw))
        if offset + length > len(blob):
            raise ProviderError("SNP certificate table entry runs past the end")
        name = SNP_CERT_GUIDS.get(guid, f"{guid}.der")
        out[name] = blob[offset : offset + length]
    return out


class Provider:
    """Base class: `get_evidence(report_data)` returns evidence binding the 64 report-data bytes."""

    name = "base"

    def available(self) -> bool:
        return False

    def get_evidence(self, report_data: bytes) -> Evidence:
        raise NotImplementedError


def _check_report_data(report_data: bytes) -> bytes:
    if len(report_data) > 64:
        raise ProviderError("report data is at most 64 bytes")
    return report_data.ljust(64, b"\0")


class ConfigfsTsmProvider(Provider):
    """Linux configfs-tsm (6.7+): SEV-SNP and TDX guests, one report per directory entry.

    Protocol: mkdir an entry, write `inblob`, read `outblob` (the kernel generates it on read),
    `provider` and `auxblob`; `generation` must not change between write and read, or another
    writer raced us and the report may not carry our report data.
    """

    name = "configfs-tsm"

    def __init__(self, root: str = CONFIGFS_TSM_ROOT, privlevel: int | None = None, ccel: str = CCEL_DATA) -> None:
        self.root = Path(root)
        self.privlevel = privlevel
        self.ccel = Path(ccel)

    def available(self) -> bool:
        return self.root.is_dir()

    def _make_entry(self, path: Path) -> None:
        os.mkdir(path)

    def get_evidence(self, report_data: bytes) -> Evidence:
        data = _check_report_data(report_data)
        if not self.available():
            raise ProviderError(f"configfs-tsm not available at {self.root}")
        entry = self.root / f"conclavium-{uuid.uuid4().hex}"
        try:
            self._make_entry(entry)
        except OSError as e:
            raise ProviderError(f"cannot create a configfs-tsm report entry: {e}") from e
        try:
            if self.privlevel is not None:
                (entry / "privlevel").write_text(str(self.privlevel))
            (entry / "inblob").write_bytes(data)
            gen_before = self._read_generation(entry)
            outblob = (entry / "outblob").read_bytes()
            provider = (entry / "provider").read_text().strip()
            aux_path = entry / "auxblob"
            auxblob = aux_path.read_bytes() if aux_path.exists() else b""
            if self._read_generation(entry) != gen_before:
                raise ProviderError("configfs-tsm entry was modified concurrently; retry")
        except OSError as e:
            raise ProviderError(f"configfs-tsm report failed: {e}") from e
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(entry)
        platform = TSM_PROVIDERS.get(provider)
        if platform is None:
            raise ProviderError(f"unknown configfs-tsm provider {provider!r}")
        certs = parse_snp_cert_table(auxblob) if platform == "snp" and auxblob else {}
        event_log = b""
        if platform == "tdx" and self.ccel.is_file():
            try:
                event_log = self.ccel.read_bytes()
            except OSError as e:
                raise ProviderError(f"cannot read the TDX event log at {self.ccel}: {e}") from e
        return Evidence(platform, outblob, certs, event_log)

    @staticmethod
    def _read_generation(entry: Path) -> str:
        path = entry / "generation"
        return path.read_text().strip() if path.exists() else ""


class _SnpGuestRequest(ctypes.Structure):
    _fields_ = [
        ("msg_version", ctypes.c_uint8),
        ("req_data", ctypes.c_uint64),
        ("resp_data", ctypes.c_uint64),
        ("exitinfo2", ctypes.c_uint64),
    ]


class _SnpExtReportReq(ctypes.Structure):
    """struct snp_ext_report_req: the 96-byte snp_report_req, then the certificate buffer."""

    _fields_ = [
        ("data", ctypes.c_uint8 * 96),
        ("certs_address", ctypes.c_uint64),
        ("certs_len", ctypes.c_uint32),
    ]


def _iowr(nr: int, size: int) -> int:
    """_IOWR('S', nr, size): direction 3 << 30 | size << 16 | 'S' << 8 | nr."""
    return (3 << 30) | (size << 16) | (ord("S") << 8) | nr


SNP_GET_REPORT = _iowr(0x0, ctypes.sizeof(_SnpGuestRequest))
SNP_GET_EXT_REPORT = _iowr(0x2, ctypes.sizeof(_SnpGuestRequest))
SNP_REPORT_RESP_SIZE = 4000
PAGE = 4096
# exitinfo2 high word: the host's (VMM's) error; 1 = certificate buffer too small, length updated.
SNP_GUEST_VMM_ERR_INVALID_LEN = 1
MAX_CERTS_LEN = 64 * PAGE
SNP_LEAVES = ("vcek.der", "vlek.der")


def parse_snp_report_response(resp: bytes) -> bytes:
    """MSG_REPORT_RSP: u32 status, u32 report_size, 24 reserved bytes, then the report."""
    status, size = struct.unpack_from("<II", resp, 0)
    if status != 0:
        raise ProviderError(f"SNP firmware returned status {status:#x}")
    if size > len(resp) - 32:
        raise ProviderError("SNP report response is truncated")
    return resp[32 : 32 + size]


class SevGuestProvider(Provider):
    """`/dev/sev-guest` (kernels without configfs-tsm): the extended report, SNP_GET_EXT_REPORT.

    The extended report returns the host's certificate table (VCEK or VLEK, ASK/ASVK, ARK; GHCB
    spec, same layout as configfs-tsm's auxblob) with the report, so the verifier gets the chain
    it needs. When the host supplies no table, `fetch_certs(report)` (the executor passes the
    attestation service's collateral lookup, which asks AMD KDS through its cache) is asked for
    the VCEK; without either the provider fails loudly rather than produce evidence every verifier
    refuses. `extended=False` issues the plain SNP_GET_REPORT.
    """

    name = "sev-guest"

    def __init__(
        self,
        device: str = SEV_GUEST_DEVICE,
        vmpl: int = 0,
        extended: bool = True,
        fetch_certs: Callable[[bytes], dict[str, bytes]] | None = None,
    ) -> None:
        self.device = device
        self.vmpl = vmpl
        self.extended = extended
        self.fetch_certs = fetch_certs

    def available(self) -> bool:
        return os.path.exists(self.device)

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        """The kernel boundary (one call per request; tests emulate the driver here)."""
        fcntl.ioctl(fd, request, arg)

    def _request(self, fd: int, report_data: bytes) -> tuple[bytes, bytes]:
        req_data = report_data + struct.pack("<I", self.vmpl) + b"\0" * 28
        resp = ctypes.create_string_buffer(SNP_REPORT_RESP_SIZE)
        if not self.extended:
            req = ctypes.create_string_buffer(req_data, 96)
            ioreq = _SnpGuestRequest(1, ctypes.addressof(req), ctypes.addressof(resp), 0)
            try:
                self._ioctl(fd, SNP_GET_REPORT, ioreq)
            except OSError as e:
                raise ProviderError(f"SNP_GET_REPORT failed: {e} (exitinfo2 {ioreq.exitinfo2:#x})") from e
            return parse_snp_report_response(resp.raw), b""
        certs_len = 4 * PAGE
        while True:
            certs = ctypes.create_string_buffer(certs_len)
            ext = _SnpExtReportReq((ctypes.c_uint8 * 96)(*req_data), ctypes.addressof(certs), certs_len)
            ioreq = _SnpGuestRequest(1, ctypes.addressof(ext), ctypes.addressof(resp), 0)
            try:
                self._ioctl(fd, SNP_GET_EXT_REPORT, ioreq)
            except OSError as e:
                vmm_error = ioreq.exitinfo2 >> 32
                wanted = int(ext.certs_len)
                if vmm_error == SNP_GUEST_VMM_ERR_INVALID_LEN and certs_len < wanted <= MAX_CERTS_LEN:
                    certs_len = -(-wanted // PAGE) * PAGE
                    continue
                raise ProviderError(f"SNP_GET_EXT_REPORT failed: {e} (exitinfo2 {ioreq.exitinfo2:#x})") from e
            used = min(int(ext.certs_len), certs_len)
            return parse_snp_report_response(resp.raw), certs.raw[:used]

    def get_evidence(self, report_data: bytes) -> Evidence:
        data = _check_report_data(report_data)
        try:
            fd = os.open(self.device, os.O_RDWR)
        except OSError as e:
            raise ProviderError(f"cannot open {self.device}: {e}") from e
        try:
            report, table = self._request(fd, data)
        finally:
            os.close(fd)
        certs = parse_snp_cert_table(table) if table else {}
        if not any(leaf in certs for leaf in SNP_LEAVES):
            if self.fetch_certs is None:
                raise ProviderError(
                    "the host supplied no SNP certificate table and no collateral source is configured: "
                    "set the attestation service URL so the VCEK can be fetched from AMD KDS"
                )
            certs.update(self.fetch_certs(report))
            if not any(leaf in certs for leaf in SNP_LEAVES):
                raise ProviderError("the collateral source returned no VCEK for this report")
        return Evidence("snp", report, certs)


class GramineProvider(Provider):
    """Gramine's `/dev/attestation` pseudo-files: write `user_report_data`, read `quote` (SGX DCAP)."""

    name = "gramine"

    def __init__(self, root: str = GRAMINE_ROOT) -> None:
        self.root = Path(root)

    def available(self) -> bool:
        return (self.root / "quote").exists()

    def get_evidence(self, report_data: bytes) -> Evidence:
        data = _check_report_data(report_data)
        try:
            kind_path = self.root / "attestation_type"
            if kind_path.exists() and kind_path.read_text().strip() not in ("dcap", ""):
                raise ProviderError(f"Gramine attestation type {kind_path.read_text().strip()!r} is not dcap")
            (self.root / "user_report_data").write_bytes(data)
            quote = (self.root / "quote").read_bytes()
        except OSError as e:
            raise ProviderError(f"Gramine attestation failed: {e}") from e
        return Evidence("sgx", quote)


class VirtualProvider(Provider):
    """Development only: unsigned evidence that any production policy refuses."""

    name = "virtual"

    def __init__(self, measurement: bytes = b"\0" * 48, host_data: bytes = b"\0" * 32) -> None:
        self.measurement = measurement
        self.host_data = host_data

    def available(self) -> bool:
        return True

    def get_evidence(self, report_data: bytes) -> Evidence:
        data = _check_report_data(report_data)
        return Evidence("virtual", make_virtual_evidence(self.measurement, self.host_data, data))


def provider_from_config(name: str, **options: object) -> Provider:
    """Build a provider by name ('configfs-tsm', 'sev-guest', 'gramine', 'virtual', 'auto')."""
    if name == "auto":
        return detect_provider(**options)  # type: ignore[arg-type]
    classes: dict[str, type[Provider]] = {
        "configfs-tsm": ConfigfsTsmProvider,
        "sev-guest": SevGuestProvider,
        "gramine": GramineProvider,
        "virtual": VirtualProvider,
    }
    if name not in classes:
        raise ProviderError(f"unknown evidence provider {name!r}")
    return classes[name](**options)  # type: ignore[arg-type]


def detect_provider(
    *,
    configfs_root: str = CONFIGFS_TSM_ROOT,
    sev_guest: str = SEV_GUEST_DEVICE,
    gramine_root: str = GRAMINE_ROOT,
    allow_virtual: bool = False,
) -> Provider:
    """The first TEE interface present: configfs-tsm, /dev/sev-guest, Gramine; virtual only if allowed.

    A real TEE guest that silently falls back to virtual evidence is a misconfiguration we want to
    fail loudly, hence `allow_virtual` defaults to False.
    """
    candidates: list[Provider] = [
        ConfigfsTsmProvider(configfs_root),
        SevGuestProvider(sev_guest),
        GramineProvider(gramine_root),
    ]
    for provider in candidates:
        if provider.available():
            return provider
    if allow_virtual:
        return VirtualProvider()
    raise ProviderError("no TEE evidence interface found (configfs-tsm, /dev/sev-guest, /dev/attestation)")


# --- sealing keys ----------------------------------------------------------------------------------
#
# Beside the evidence providers, the one other thing a TEE gives an executor: a key only this
# enclave (this measurement, this policy) can derive again after a restart, to seal what it keeps
# on disk. SEV-SNP derives one in firmware, Gramine exposes SGX's; TDX has no sealing key, so a TDX
# node keeps its secrets in memory only and joins again after a restart.

SEALING_KEY_LEN = 32
VIRTUAL_SEALING_KEY_FILE = "dev-sealing-key.INSECURE"

# SNP_GET_DERIVED_KEY (SEV-SNP firmware ABI, MSG_KEY_REQ / MSG_KEY_RSP; Linux uapi sev-guest.h).
SNP_GET_DERIVED_KEY = _iowr(0x1, ctypes.sizeof(_SnpGuestRequest))
SNP_ROOT_KEY_VCEK = 0
SNP_ROOT_KEY_VMRK = 1
# GUEST_FIELD_SELECT bits: what the firmware mixes into the derived key.
SNP_FIELD_POLICY = 1 << 0
SNP_FIELD_IMAGE_ID = 1 << 1
SNP_FIELD_FAMILY_ID = 1 << 2
SNP_FIELD_MEASUREMENT = 1 << 3
SNP_FIELD_GUEST_SVN = 1 << 4
SNP_FIELD_TCB_VERSION = 1 << 5
SNP_KEY_REQ_SIZE = 32
SNP_KEY_RESP_SIZE = 64


def encode_snp_derived_key_request(
    fields: int, vmpl: int = 0, root_key: int = SNP_ROOT_KEY_VCEK, guest_svn: int = 0, tcb_version: int = 0
) -> bytes:
    """MSG_KEY_REQ: u32 root_key_select, u32 reserved, u64 guest_field_select, u32 vmpl,
    u32 guest_svn, u64 tcb_version (32 bytes, little-endian)."""
    if root_key not in (SNP_ROOT_KEY_VCEK, SNP_ROOT_KEY_VMRK):
        raise ProviderError(f"SNP root key select must be 0 (VCEK) or 1 (VMRK), not {root_key}")
    if fields >> 6 or not 0 <= vmpl <= 3:
        raise ProviderError("SNP guest field select uses bits 0-5 only and VMPL is 0-3")
    return struct.pack("<IIQIIQ", root_key, 0, fields, vmpl, guest_svn, tcb_version)


def parse_snp_derived_key_response(resp: bytes) -> bytes:
    """MSG_KEY_RSP: u32 status, 28 reserved bytes, then the 32-byte derived key."""
    if len(resp) < SNP_KEY_RESP_SIZE:
        raise ProviderError("SNP derived-key response is truncated")
    (status,) = struct.unpack_from("<I", resp, 0)
    if status != 0:
        raise ProviderError(f"SNP firmware refused the derived key: status {status:#x}")
    key = resp[32:64]
    if not any(key):
        raise ProviderError("SNP firmware returned an all-zero derived key")
    return key


def _expand(material: bytes, label: bytes) -> bytes:
    """The platform key, never used directly: HKDF-SHA256 to a 32-byte key for this one use."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), SEALING_KEY_LEN, salt=None, info=b"conclavium.sealing.v1\0" + label).derive(material)


class SealingKeySource:
    """Where this node's sealing key comes from. `derive()` returns 32 bytes, or None when the
    platform has no sealing key and nothing secret may be written to disk at all."""

    name = "base"

    def derive(self) -> bytes | None:
        raise NotImplementedError


class SevGuestSealing(SealingKeySource):
    """SEV-SNP: SNP_GET_DERIVED_KEY on `/dev/sev-guest`, rooted in the chip's VCEK and mixing in
    the guest policy and the launch measurement, so another image or policy derives another key."""

    name = "sev-guest"

    def __init__(
        self, device: str = SEV_GUEST_DEVICE, vmpl: int = 0, fields: int = SNP_FIELD_POLICY | SNP_FIELD_MEASUREMENT
    ) -> None:
        self.device = device
        self.vmpl = vmpl
        self.fields = fields

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        """The kernel boundary (tests emulate the driver here)."""
        fcntl.ioctl(fd, request, arg)

    def derive(self) -> bytes:
        req = ctypes.create_string_buffer(encode_snp_derived_key_request(self.fields, self.vmpl), SNP_KEY_REQ_SIZE)
        resp = ctypes.create_string_buffer(SNP_KEY_RESP_SIZE)
        ioreq = _SnpGuestRequest(1, ctypes.addressof(req), ctypes.addressof(resp), 0)
        try:
            fd = os.open(self.device, os.O_RDWR)
        except OSError as e:
            raise ProviderError(f"cannot open {self.device} for the sealing key: {e}") from e
        try:
            self._ioctl(fd, SNP_GET_DERIVED_KEY, ioreq)
        except OSError as e:
            raise ProviderError(f"SNP_GET_DERIVED_KEY failed: {e} (exitinfo2 {ioreq.exitinfo2:#x})") from e
        finally:
            os.close(fd)
        return _expand(parse_snp_derived_key_response(resp.raw), b"snp")


class GramineSealing(SealingKeySource):
    """SGX under Gramine: the MRENCLAVE-bound sealing key, `/dev/attestation/keys/_sgx_mrenclave`
    (16 bytes); a new enclave build cannot read what the old one sealed."""

    name = "gramine"

    def __init__(self, root: str = GRAMINE_ROOT) -> None:
        self.root = Path(root)

    def derive(self) -> bytes:
        path = self.root / "keys" / "_sgx_mrenclave"
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise ProviderError(f"cannot read the Gramine sealing key {path}: {e}") from e
        if len(raw) != 16 or not any(raw):
            raise ProviderError(f"the Gramine sealing key {path} is not 16 non-zero bytes")
        return _expand(raw, b"sgx-mrenclave")


class MemoryOnly(SealingKeySource):
    """TDX: no sealing key. Secrets stay in memory; after a restart the node joins again."""

    name = "memory-only"

    def derive(self) -> None:
        return None


class VirtualSealing(SealingKeySource):
    """Development only: a random key in a file named as insecure, beside what it seals. It protects
    nothing against whoever reads the volume; production node policy refuses `virtual` nodes."""

    name = "virtual"

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / VIRTUAL_SEALING_KEY_FILE

    def derive(self) -> bytes:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileExistsError):
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(os.urandom(SEALING_KEY_LEN))
                    f.flush()
                    os.fsync(f.fileno())
        raw = self.path.read_bytes()
        if len(raw) != SEALING_KEY_LEN:
            raise ProviderError(f"{self.path} is not a {SEALING_KEY_LEN}-byte key")
        return raw


def sealing_from_config(
    tee: str,
    data_dir: Path,
    *,
    sev_guest: str = SEV_GUEST_DEVICE,
    gramine_root: str = GRAMINE_ROOT,
) -> SealingKeySource:
    """The sealing-key source of an executor's `--tee`. configfs-tsm serves SNP and TDX guests: an
    SNP guest also has `/dev/sev-guest` and derives its key there; a TDX guest has none."""
    if tee == "virtual":
        return VirtualSealing(data_dir)
    if tee == "sev-guest":
        return SevGuestSealing(sev_guest)
    if tee == "gramine":
        return GramineSealing(gramine_root)
    if tee == "configfs-tsm":
        return SevGuestSealing(sev_guest) if os.path.exists(sev_guest) else MemoryOnly()
    raise ProviderError(f"unknown TEE {tee!r} for sealing")
