"""A realistic TDX event log built for tests, in the real CCEL format (no recorded log exists here).

No TDX event log is among the recorded vectors, so this module builds one event by event the way
TDVF, shim, grub and the Linux EFI stub log a grub boot (TCG PC Client crypto-agile layout,
SHA-384 only, MR index 1-3 = RTMR0-2, padded with 0xFF like the unused CCEL area): the
configuration firmware volume, TD HOB and ACPI tables, the Secure Boot variables, the boot
variables, boot actions, separators, three boot applications (shim, grub, the kernel), grub's
commands and the kernel's load options and initrd as tagged events. Event data follow the
structures of the TCG PC Client PFP spec (UEFI_VARIABLE_DATA, UEFI_IMAGE_LOAD_EVENT,
UEFI_PLATFORM_FIRMWARE_BLOB2, TCG_PCClientTaggedEvent); digests are SHA-384 of stand-in contents
(firmware would hash the real images and tables), so its RTMRs are not any real TD's.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass, field

from conclavium.attestation.tdx_event_log import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_EVENT_TAG,
    EV_NO_ACTION,
    EV_SEPARATOR,
    INITRD_TAG_ID,
    LOAD_OPTIONS_TAG_ID,
    Event,
    encode_event_log,
    replay,
    tagged_event,
)

EV_PLATFORM_CONFIG_FLAGS = 0x0000000A
EV_IPL = 0x0000000D
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
EV_EFI_VARIABLE_BOOT = 0x80000002
EV_EFI_ACTION = 0x80000007
EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
EV_EFI_HANDOFF_TABLES2 = 0x8000000B
EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")
RTMR0, RTMR1, RTMR2 = 1, 2, 3


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def _variable(guid: uuid.UUID, name: str, value: bytes) -> bytes:
    """UEFI_VARIABLE_DATA: VariableName GUID, name length (chars), data length, UTF-16 name, data."""
    return guid.bytes_le + struct.pack("<QQ", len(name), len(value)) + name.encode("utf-16-le") + value


def _image_load(address: int, length: int, path: str) -> bytes:
    """UEFI_IMAGE_LOAD_EVENT with a file-path device path node (type 4, subtype 4) and its end node."""
    node = path.encode("utf-16-le") + b"\0\0"
    device_path = struct.pack("<BBH", 4, 4, 4 + len(node)) + node + b"\x7f\xff\x04\x00"
    return struct.pack("<QQQQ", address, length, 0, len(device_path)) + device_path


def _blob2(description: bytes, base: int, length: int) -> bytes:
    return struct.pack("<B", len(description)) + description + struct.pack("<QQ", base, length)


@dataclass
class BootChain:
    """What a member would pin: the stand-in images behind each digest."""

    kernel: bytes = b"vmlinuz-6.8.0-tdx stand-in image"
    initrd: bytes = b"initrd.img-6.8.0-tdx stand-in image"
    cmdline: str = "BOOT_IMAGE=/vmlinuz-6.8.0-tdx root=/dev/vda1 ro console=hvc0"
    shim: bytes = b"shimx64.efi stand-in image"
    grub: bytes = b"grubx64.efi stand-in image"
    extra: list[Event] = field(default_factory=list)

    @property
    def kernel_digest(self) -> bytes:
        return sha384(self.kernel)

    @property
    def initrd_digest(self) -> bytes:
        return sha384(self.initrd)

    @property
    def cmdline_digest(self) -> bytes:
        return sha384(self.cmdline.encode("utf-16-le") + b"\0\0")

    def events(self) -> list[Event]:
        cfv, hob, acpi = b"CFV stand-in", b"TD HOB stand-in", b"ACPI tables stand-in"
        out = [
            Event(RTMR0, EV_EFI_PLATFORM_FIRMWARE_BLOB2, sha384(cfv), _blob2(b"CFV", 0xFFC00000, 0x40000)),
            Event(RTMR0, EV_EFI_HANDOFF_TABLES2, sha384(hob), _blob2(b"TD Hob", 0x809000, 0x2000)),
            Event(RTMR0, EV_PLATFORM_CONFIG_FLAGS, sha384(acpi), b"ACPI DATA"),
        ]
        for guid, name, value in (
            (EFI_GLOBAL_VARIABLE, "SecureBoot", b"\x01"),
            (EFI_GLOBAL_VARIABLE, "PK", b"PK certificate list stand-in"),
            (EFI_GLOBAL_VARIABLE, "KEK", b"KEK certificate list stand-in"),
            (EFI_IMAGE_SECURITY_DATABASE, "db", b"db certificate list stand-in"),
            (EFI_IMAGE_SECURITY_DATABASE, "dbx", b"dbx hash list stand-in"),
        ):
            data = _variable(guid, name, value)
            out.append(Event(RTMR0, EV_EFI_VARIABLE_DRIVER_CONFIG, sha384(data), data))
        out.append(Event(RTMR0, EV_SEPARATOR, sha384(b"\0" * 4), b"\0" * 4))
        for name, value in (("BootOrder", b"\x00\x00"), ("Boot0000", b"UiApp load option stand-in")):
            out.append(Event(RTMR0, EV_EFI_VARIABLE_BOOT, sha384(value), _variable(EFI_GLOBAL_VARIABLE, name, value)))
        action = b"Calling EFI Application from Boot Option"
        out.append(Event(RTMR1, EV_EFI_ACTION, sha384(action), action))
        out.append(Event(RTMR1, EV_SEPARATOR, sha384(b"\0" * 4), b"\0" * 4))
        out.append(Event(RTMR0, EV_NO_ACTION, b"\0" * 48, b"StartupLocality\0\0"))
        for image, path, base in (
            (self.shim, "\\EFI\\BOOT\\BOOTX64.EFI", 0x7E000000),
            (self.grub, "\\EFI\\ubuntu\\grubx64.efi", 0x7D000000),
            (self.kernel, "\\vmlinuz-6.8.0-tdx", 0x7A000000),
        ):
            out.append(
                Event(RTMR1, EV_EFI_BOOT_SERVICES_APPLICATION, sha384(image), _image_load(base, len(image), path))
            )
        for command in ("grub_cmd: set root=hd0,gpt1", f"grub_cmd: linux /vmlinuz-6.8.0-tdx {self.cmdline[30:]}"):
            out.append(Event(RTMR2, EV_IPL, sha384(command.encode()), command.encode() + b"\0"))
        out.append(
            Event(
                RTMR2,
                EV_EVENT_TAG,
                self.cmdline_digest,
                tagged_event(LOAD_OPTIONS_TAG_ID, b"LOADED_IMAGE::LoadOptions\0"),
            )
        )
        out.append(Event(RTMR2, EV_EVENT_TAG, self.initrd_digest, tagged_event(INITRD_TAG_ID, b"Linux initrd\0")))
        for text in (b"Exit Boot Services Invocation", b"Exit Boot Services Returned with Success"):
            out.append(Event(RTMR1, EV_EFI_ACTION, sha384(text), text))
        return out + self.extra

    def log(self, pad_to: int = 0x10000) -> bytes:
        return encode_event_log(self.events(), pad_to=pad_to)

    def rtmrs(self) -> list[bytes]:
        return replay(self.events())
