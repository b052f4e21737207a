"""TDX event log (CCEL): parse, replay into RTMR0-3, and name the measured boot components.

The log is the one TDVF publishes in the ACPI CCEL table (Linux: /sys/firmware/acpi/tables/data/CCEL),
in the TCG PC Client crypto-agile format: a first event in the SHA-1 layout (TCG_PCClientPCREvent,
EV_NO_ACTION, carrying the "Spec ID Event03" structure that lists the digest algorithms and sizes),
then TCG_PCR_EVENT2 records {u32 MR index, u32 event type, u32 digest count, {u16 algorithm,
digest}..., u32 event size, event}. The MR index is the CC measurement register (UEFI spec, CC
measurement protocol): 1-4 are RTMR0-3 (TDX maps PCR 1,7 to RTMR0, PCR 2-6 to RTMR1, PCR 8-15 to
RTMR2); 0 would be MRTD, which firmware does not log. Replay: RTMR = SHA-384(RTMR || digest) from 48
zero bytes for every event except EV_NO_ACTION. The unused log area is padding (0xFF or 0x00).

Named components, for policy (the Linux EFI stub and TDVF conventions):
* `kernel`: the last EV_EFI_BOOT_SERVICES_APPLICATION in RTMR1 (the PE image started last before
  ExitBootServices; its digest is the image's Authenticode SHA-384),
* `initrd`: EV_EVENT_TAG in RTMR2 with tagged-event id 0x8F3B22EC ("Linux initrd"),
* `cmdline`: EV_EVENT_TAG in RTMR2 with tagged-event id 0x8F3B22ED ("LOADED_IMAGE::LoadOptions").
The digests are what the firmware or stub extended (SHA-384 of the image, the initrd, the UTF-16
load options), not hashes of the event data.

The log is untrusted input: every length is bounded, and anything malformed is a VerificationError.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from .claims import VerificationError

SHA384_ALG = 0x000C
DIGEST_SIZE = 48
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"
EV_NO_ACTION = 0x00000003
EV_SEPARATOR = 0x00000004
EV_EVENT_TAG = 0x00000006
EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
INITRD_TAG_ID = 0x8F3B22EC
LOAD_OPTIONS_TAG_ID = 0x8F3B22ED
MAX_LOG_BYTES = 1 << 20
MAX_EVENTS = 4096
MAX_ALGORITHMS = 16
RTMRS = 4
COMPONENTS = ("kernel", "initrd", "cmdline")
EVENT_NAMES: dict[int, str] = {
    0x00000000: "EV_PREBOOT_CERT",
    0x00000001: "EV_POST_CODE",
    0x00000003: "EV_NO_ACTION",
    0x00000004: "EV_SEPARATOR",
    0x00000005: "EV_ACTION",
    0x00000006: "EV_EVENT_TAG",
    0x00000007: "EV_S_CRTM_CONTENTS",
    0x00000008: "EV_S_CRTM_VERSION",
    0x0000000A: "EV_PLATFORM_CONFIG_FLAGS",
    0x0000000D: "EV_IPL",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG",
    0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER",
    0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
}


@dataclass(frozen=True)
class Event:
    """One TCG_PCR_EVENT2 record (the SHA-384 digest only; TDX logs no other bank)."""

    mr_index: int
    event_type: int
    digest: bytes
    data: bytes

    @property
    def rtmr(self) -> int:
        return self.mr_index - 1

    @property
    def type_name(self) -> str:
        return EVENT_NAMES.get(self.event_type, f"{self.event_type:#010x}")

    def tag_id(self) -> int | None:
        """The taggedEventID of an EV_EVENT_TAG (TCG_PCClientTaggedEvent), else None."""
        if self.event_type != EV_EVENT_TAG or len(self.data) < 8:
            return None
        tag, size = struct.unpack_from("<II", self.data, 0)
        return tag if size <= len(self.data) - 8 else None


def _fail(message: str) -> VerificationError:
    return VerificationError("event_log_format", message)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _fail(f"event log truncated in {what} at offset {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return int(struct.unpack("<H", self.take(2, what))[0])

    def u32(self, what: str) -> int:
        return int(struct.unpack("<I", self.take(4, what))[0])

    def padding_left(self) -> bool:
        rest = self.data[self.pos :]
        return not rest or rest == b"\xff" * len(rest) or rest == b"\0" * len(rest)


def _spec_id(event: bytes) -> dict[int, int]:
    """Digest sizes by algorithm id from the TCG_EfiSpecIDEvent ("Spec ID Event03")."""
    r = _Reader(event)
    if r.take(16, "spec id signature") != SPEC_ID_SIGNATURE:
        raise _fail("the first event is not a 'Spec ID Event03' (not a crypto-agile log)")
    r.take(4, "platform class")
    _minor, major, _errata, _uintn = r.u8("spec version"), r.u8("spec version"), r.u8("errata"), r.u8("uintn size")
    if major != 2:
        raise _fail(f"spec version {major} is not 2")
    count = r.u32("algorithm count")
    if not 0 < count <= MAX_ALGORITHMS:
        raise _fail(f"{count} digest algorithms")
    sizes: dict[int, int] = {}
    for _ in range(count):
        alg, size = r.u16("algorithm id"), r.u16("digest size")
        if alg in sizes or not 0 < size <= 64:
            raise _fail(f"algorithm {alg:#06x} listed twice or with size {size}")
        sizes[alg] = size
    vendor = r.u8("vendor info size")
    r.take(vendor, "vendor info")
    if sizes.get(SHA384_ALG) != DIGEST_SIZE:
        raise _fail("the log has no SHA-384 digests")
    return sizes


def parse_event_log(data: bytes) -> list[Event]:
    """The events of a CCEL log (EV_NO_ACTION records included, the Spec ID header not)."""
    if len(data) > MAX_LOG_BYTES:
        raise _fail(f"event log of {len(data)} bytes exceeds {MAX_LOG_BYTES}")
    r = _Reader(data)
    index, kind = r.u32("first event"), r.u32("first event")
    r.take(20, "first event digest")
    size = r.u32("first event size")
    if index != 0 or kind != EV_NO_ACTION:
        raise _fail("the first event is not the EV_NO_ACTION Spec ID event")
    sizes = _spec_id(r.take(size, "spec id event"))
    events: list[Event] = []
    while not r.padding_left():
        if len(events) >= MAX_EVENTS:
            raise _fail(f"more than {MAX_EVENTS} events")
        mr, kind, count = r.u32("MR index"), r.u32("event type"), r.u32("digest count")
        if not 0 < count <= len(sizes):
            raise _fail(f"event {len(events)}: {count} digests")
        digests: dict[int, bytes] = {}
        for _ in range(count):
            alg = r.u16("digest algorithm")
            if alg not in sizes or alg in digests:
                raise _fail(f"event {len(events)}: digest algorithm {alg:#06x} not in the Spec ID event or repeated")
            digests[alg] = r.take(sizes[alg], "digest")
        if SHA384_ALG not in digests:
            raise _fail(f"event {len(events)} has no SHA-384 digest")
        body = r.take(r.u32("event size"), "event data")
        if kind != EV_NO_ACTION and not 1 <= mr <= RTMRS:
            raise _fail(f"event {len(events)} extends MR index {mr}; only 1-4 (RTMR0-3) can be replayed")
        events.append(Event(mr, kind, digests[SHA384_ALG], body))
    return events


def replay(events: list[Event]) -> list[bytes]:
    """RTMR0-3 after extending every measured event, from all zeros."""
    rtmrs = [b"\0" * DIGEST_SIZE] * RTMRS
    for e in events:
        if e.event_type != EV_NO_ACTION:
            rtmrs[e.rtmr] = hashlib.sha384(rtmrs[e.rtmr] + e.digest).digest()
    return rtmrs


def components(events: list[Event]) -> dict[str, list[str]]:
    """Digests of the named components (hex, in log order); see the module docstring."""
    measured = [e for e in events if e.event_type != EV_NO_ACTION]
    apps = [e for e in measured if e.rtmr == 1 and e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION]
    return {
        "kernel": [apps[-1].digest.hex()] if apps else [],
        "initrd": [e.digest.hex() for e in measured if e.rtmr == 2 and e.tag_id() == INITRD_TAG_ID],
        "cmdline": [e.digest.hex() for e in measured if e.rtmr == 2 and e.tag_id() == LOAD_OPTIONS_TAG_ID],
    }


def check_against_quote(data: bytes, rtmrs: list[bytes]) -> dict[str, object]:
    """Parse and replay `data`; every replayed RTMR must equal the quote's. The claims' summary:
    per RTMR the extended digests in order, the named components, the number of events."""
    events = parse_event_log(data)
    for i, (got, want) in enumerate(zip(replay(events), rtmrs, strict=True)):
        if got != want:
            raise VerificationError(
                "event_log_replay", f"RTMR{i} replayed from the event log is {got.hex()}, the quote has {want.hex()}"
            )
    summary: dict[str, object] = {
        f"rtmr{i}": [e.digest.hex() for e in events if e.event_type != EV_NO_ACTION and e.rtmr == i]
        for i in range(RTMRS)
    }
    summary["components"] = components(events)
    summary["events"] = len(events)
    return summary


def encode_event_log(events: list[Event], *, vendor_info: bytes = b"", pad_to: int = 0) -> bytes:
    """The log in CCEL layout (Spec ID header listing SHA-384 only), padded with 0xFF to `pad_to`
    bytes as TDVF leaves the unused log area. For tools and tests that build logs."""
    spec = (
        SPEC_ID_SIGNATURE
        + struct.pack("<IBBBB", 0, 0, 2, 0, 2)
        + struct.pack("<I", 1)
        + struct.pack("<HH", SHA384_ALG, DIGEST_SIZE)
        + struct.pack("<B", len(vendor_info))
        + vendor_info
    )
    out = struct.pack("<II", 0, EV_NO_ACTION) + b"\0" * 20 + struct.pack("<I", len(spec)) + spec
    for e in events:
        if len(e.digest) != DIGEST_SIZE:
            raise ValueError("TDX events carry 48-byte SHA-384 digests")
        out += struct.pack("<III", e.mr_index, e.event_type, 1) + struct.pack("<H", SHA384_ALG) + e.digest
        out += struct.pack("<I", len(e.data)) + e.data
    return out + b"\xff" * max(0, pad_to - len(out))


def tagged_event(tag_id: int, data: bytes) -> bytes:
    """TCG_PCClientTaggedEvent event data: {u32 taggedEventID, u32 size, data}."""
    return struct.pack("<II", tag_id, len(data)) + data
