"""Sealing keys beside the evidence providers: SNP_GET_DERIVED_KEY's request encoding and response
parsing on the firmware ABI's layouts (an emulated driver answers the ioctl as the Linux driver
does), Gramine's MRENCLAVE key file, TDX's absence of one, and the virtual development key file."""

from __future__ import annotations

import ctypes
import errno
import struct
from pathlib import Path

import pytest

from conclavium.attestation.providers import (
    SNP_FIELD_MEASUREMENT,
    SNP_FIELD_POLICY,
    SNP_GET_DERIVED_KEY,
    VIRTUAL_SEALING_KEY_FILE,
    GramineSealing,
    MemoryOnly,
    ProviderError,
    SevGuestSealing,
    VirtualSealing,
    _SnpGuestRequest,
    encode_snp_derived_key_request,
    parse_snp_derived_key_response,
    sealing_from_config,
)

FIRMWARE_KEY = bytes(range(0x40, 0x60))


def test_derived_key_request_layout() -> None:
    """MSG_KEY_REQ, 32 bytes: root key, reserved, field select, VMPL, guest SVN, TCB version."""
    req = encode_snp_derived_key_request(SNP_FIELD_POLICY | SNP_FIELD_MEASUREMENT, vmpl=1, guest_svn=7, tcb_version=9)
    assert len(req) == 32
    assert req == (
        b"\x00\x00\x00\x00"  # ROOT_KEY_SELECT: VCEK
        + b"\x00\x00\x00\x00"  # reserved
        + bytes([0x09])
        + b"\x00" * 7  # GUEST_FIELD_SELECT: policy (bit 0) | measurement (bit 3)
        + b"\x01\x00\x00\x00"  # VMPL
        + b"\x07\x00\x00\x00"  # GUEST_SVN
        + b"\x09"
        + b"\x00" * 7  # TCB_VERSION
    )
    with pytest.raises(ProviderError):
        encode_snp_derived_key_request(1 << 6)
    with pytest.raises(ProviderError):
        encode_snp_derived_key_request(1, vmpl=4)


def test_derived_key_response_parsing() -> None:
    ok = struct.pack("<I", 0) + b"\0" * 28 + FIRMWARE_KEY
    assert parse_snp_derived_key_response(ok) == FIRMWARE_KEY
    with pytest.raises(ProviderError, match="status 0x16"):
        parse_snp_derived_key_response(struct.pack("<I", 0x16) + b"\0" * 60)
    with pytest.raises(ProviderError, match="truncated"):
        parse_snp_derived_key_response(ok[:40])
    with pytest.raises(ProviderError, match="all-zero"):
        parse_snp_derived_key_response(b"\0" * 64)


class EmulatedKeyDriver(SevGuestSealing):
    """The driver's side of SNP_GET_DERIVED_KEY: a key that depends on what was asked for, as the
    firmware's does on the selected fields (here: the raw request stands for them)."""

    def __init__(self, device: str, fields: int = SNP_FIELD_POLICY | SNP_FIELD_MEASUREMENT, fail: int = 0) -> None:
        super().__init__(device, fields=fields)
        self.fail = fail
        self.requests: list[bytes] = []

    def _ioctl(self, fd: int, request: int, arg: ctypes.Structure) -> None:
        assert request == SNP_GET_DERIVED_KEY
        assert isinstance(arg, _SnpGuestRequest) and arg.msg_version == 1
        req = ctypes.string_at(arg.req_data, 32)
        self.requests.append(req)
        if self.fail:
            arg.exitinfo2 = self.fail
            raise OSError(errno.EIO, "firmware error")
        import hashlib

        key = hashlib.sha256(b"chip" + req).digest()
        ctypes.memmove(arg.resp_data, struct.pack("<I", 0) + b"\0" * 28 + key, 64)


def test_sev_guest_sealing_through_the_ioctl(tmp_path: Path) -> None:
    device = tmp_path / "sev-guest"
    device.write_bytes(b"")
    src = EmulatedKeyDriver(str(device))
    k1, k2 = src.derive(), src.derive()
    assert k1 == k2 and len(k1) == 32
    assert src.requests[0][8] == 0x09
    other = EmulatedKeyDriver(str(device), fields=SNP_FIELD_MEASUREMENT).derive()
    assert other != k1
    with pytest.raises(ProviderError, match="SNP_GET_DERIVED_KEY failed"):
        EmulatedKeyDriver(str(device), fail=0x16).derive()
    with pytest.raises(ProviderError, match="cannot open"):
        SevGuestSealing(str(tmp_path / "absent")).derive()


def test_gramine_sealing_key_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "_sgx_mrenclave").write_bytes(bytes(range(1, 17)))
    key = GramineSealing(str(tmp_path)).derive()
    assert len(key) == 32 and bytes(range(1, 17)) not in key
    (tmp_path / "keys" / "_sgx_mrenclave").write_bytes(b"short")
    with pytest.raises(ProviderError, match="16 non-zero bytes"):
        GramineSealing(str(tmp_path)).derive()
    with pytest.raises(ProviderError, match="cannot read"):
        GramineSealing(str(tmp_path / "none")).derive()


def test_tdx_has_no_sealing_key_and_virtual_keeps_an_insecure_file(tmp_path: Path) -> None:
    assert MemoryOnly().derive() is None
    assert isinstance(sealing_from_config("configfs-tsm", tmp_path, sev_guest=str(tmp_path / "no")), MemoryOnly)
    (tmp_path / "sev").write_bytes(b"")
    assert isinstance(sealing_from_config("configfs-tsm", tmp_path, sev_guest=str(tmp_path / "sev")), SevGuestSealing)
    v = sealing_from_config("virtual", tmp_path)
    assert isinstance(v, VirtualSealing)
    key = v.derive()
    path = tmp_path / VIRTUAL_SEALING_KEY_FILE
    assert path.read_bytes() == key and path.stat().st_mode & 0o777 == 0o600
    assert VirtualSealing(tmp_path).derive() == key
    with pytest.raises(ProviderError):
        sealing_from_config("nitro", tmp_path)
