"""The `/dev/sev-guest` provider's extended report, against an emulated driver and recorded vectors.

The vectors hold the report and the VCEK, not a recorded certificate table, so the emulated driver
builds the table the way the host does (GHCB spec: {GUID, offset, length} entries ending in a zero
GUID, offsets from the table's start, then the DER certificates) and answers the ioctl the way
the Linux driver does, including "buffer too small" with the required length.
"""

from __future__ import annotations

import ctypes
import errno
import struct
import uuid
from pathlib import Path

import pytest
from att_vectors import snp_vectors
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conclavium.attestation import verify_evidence
from conclavium.attestation.providers import (
    PAGE,
    SNP_GET_EXT_REPORT,
    SNP_GET_REPORT,
    ProviderError,
    SevGuestProvider,
    _SnpExtReportReq,
    _SnpGuestRequest,
)

VCEK_GUID = "63da758d-e664-4564-adc5-f4b93be8accd"
ASK_GUID = "4ab7b379-bbac-4fe4-a02f-05aef327c782"
ARK_GUID = "c0b406a4-a803-4952-9743-3fb6014cd0ae"
V = next(v for v in snp_vectors() if v.name == "milan-v2-virtee")


def der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def cert_table(entries: list[tuple[str, bytes]]) -> bytes:
    """GHCB certificate table: entries, a zero entry, then the certificates."""
    header_len = 24 * (len(entries) + 1)
    header, body = b"", b""
    for guid, data in entries:
        header += uuid.UUID(guid).bytes_le + struct.pack("<II", header_len + len(body), len(data))
        body += data
    return header + b"\0" * 24 + body


def vector_table() -> bytes:
    return cert_table(
        [(VCEK_GUID, V.certs["vcek.der"]), (ASK_GUID, der(V.certs["ask.pem"])), (ARK_GUID, der(V.certs["ark.pem"]))]
    )


class EmulatedDriver(SevGuestProvider):
    """The sev-guest driver's side of the ioctls, writing into the caller's buffers."""

    def __init__(self, device: str, table: bytes, **kw: object) -> None:
        super().__init__(device, **kw)  # type: ignore[arg-type]
        self.table = table
        self.calls: list[tuple[int, int]] = []
        self.seen_report_data: bytes = b""
        self.seen_vmpl = -1

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        assert isinstance(arg, _SnpGuestRequest) and arg.msg_version == 1
        resp = struct.pack("<II", 0, len(V.report)) + b"\0" * 24 + V.report
        if request == SNP_GET_REPORT:
            req = ctypes.string_at(arg.req_data, 96)
        else:
            assert request == SNP_GET_EXT_REPORT
            ext = _SnpExtReportReq.from_address(arg.req_data)
            req = bytes(ext.data)
            self.calls.append((request, int(ext.certs_len)))
            if ext.certs_len < len(self.table):
                ext.certs_len = -(-len(self.table) // PAGE) * PAGE
                arg.exitinfo2 = 1 << 32  # vmm_error SNP_GUEST_VMM_ERR_INVALID_LEN
                raise OSError(errno.EIO, "Input/output error")
            ctypes.memmove(ext.certs_address, self.table, len(self.table))
            ext.certs_len = len(self.table)
        self.seen_report_data = req[:64]
        self.seen_vmpl = struct.unpack_from("<I", req, 64)[0]
        ctypes.memmove(arg.resp_data, resp, len(resp))


@pytest.fixture
def device(tmp_path: Path) -> str:
    path = tmp_path / "sev-guest"
    path.write_bytes(b"")
    return str(path)


def test_extended_report_brings_the_chain_and_verifies(device: str) -> None:
    provider = EmulatedDriver(device, vector_table(), vmpl=0)
    ev = provider.get_evidence(b"\x42" * 32)
    assert provider.seen_report_data == b"\x42" * 32 + b"\0" * 32 and provider.seen_vmpl == 0
    assert ev.platform == "snp" and ev.evidence == V.report
    assert set(ev.certs) == {"vcek.der", "ask.der", "ark.der"}
    claims = verify_evidence("snp", ev.evidence, certs=list(ev.certs.values()), at=V.at)
    assert claims.product == "Milan" and claims.measurement == V.expected["report"]["measurement"]


def test_buffer_too_small_is_retried_with_the_length_the_host_asks(device: str) -> None:
    big = cert_table(
        [
            (VCEK_GUID, V.certs["vcek.der"]),
            (ASK_GUID, der(V.certs["ask.pem"])),
            ("11111111-2222-3333-4444-555555555555", b"\0" * 5 * PAGE),
        ]
    )
    provider = EmulatedDriver(device, big)
    ev = provider.get_evidence(b"")
    assert [n for _, n in provider.calls] == [4 * PAGE, 6 * PAGE]
    assert "vcek.der" in ev.certs and ev.certs["ask.der"] == der(V.certs["ask.pem"])


def test_no_table_uses_the_collateral_source_or_fails_loudly(device: str) -> None:
    with pytest.raises(ProviderError, match="no SNP certificate table"):
        EmulatedDriver(device, b"").get_evidence(b"")
    asked: list[bytes] = []

    def fetch(report: bytes) -> dict[str, bytes]:
        asked.append(report)
        return {"vcek.der": V.certs["vcek.der"]}

    ev = EmulatedDriver(device, b"", fetch_certs=fetch).get_evidence(b"")
    assert asked == [V.report]
    verify_evidence("snp", ev.evidence, certs=list(ev.certs.values()), at=V.at)
    with pytest.raises(ProviderError, match="no VCEK"):
        EmulatedDriver(device, b"", fetch_certs=lambda r: {}).get_evidence(b"")


def test_plain_report_without_extension(device: str) -> None:
    provider = EmulatedDriver(device, b"", extended=False, fetch_certs=lambda r: {"vcek.der": V.certs["vcek.der"]})
    ev = provider.get_evidence(b"\1" * 64)
    assert provider.seen_report_data == b"\1" * 64 and ev.evidence == V.report


def test_missing_device_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="cannot open"):
        SevGuestProvider(str(tmp_path / "absent")).get_evidence(b"")
