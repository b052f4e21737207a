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

    def __init__(self, root: str = CONFIGFS_TSM_ROOT, privlevel: int | None = None) -> None:
        self.root = Path(root)
        self.privlevel = privlevel

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
        return Evidence(platform, outblob, certs)

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
