"""An executor's persisted ledger: chunk files of blocks, and encrypted snapshots of its state.

Chunk file `chunk-<first height, 12 digits>.cvl`: records of
    magic "CVB1" | u32 length | u32 CRC-32 | u64 stream sequence | block bytes (length - 8)
(big-endian). The block bytes are exactly those of the ledger stream, so the hash chain and
every signature can be re-verified from the files alone. A record cut short at the end of the last
file is what a crash mid-write leaves: it is reported as a torn tail and dropped. Anything else that
does not parse, or whose CRC does not match, is corruption, reported with the file and offset.

Snapshot file `snapshot-<height, 12 digits>.cvs`:
    magic "CVS1" | u32 header length | header JSON | AES-256-GCM(nonce 12 B | ciphertext)
The header names the height, stream sequence, the ledger-secret key id and the keyed digest of the
plaintext (`snapshot_digest`); it is the GCM associated data, so neither it nor the body can be changed unnoticed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

BLOCK_MAGIC = b"CVB1"
SNAPSHOT_MAGIC = b"CVS1"
_HEAD = struct.Struct(">4sII")
_SEQ = struct.Struct(">Q")


class LedgerFileError(ValueError):
    """A persisted file that must not be trusted; names the file and the byte offset."""

    def __init__(self, path: Path, offset: int, message: str) -> None:
        super().__init__(f"{path}: at byte {offset}: {message}")
        self.path, self.offset = path, offset


@dataclass(frozen=True)
class BlockRecord:
    seq: int
    raw: bytes
    path: Path
    offset: int


def chunk_name(first_height: int) -> str:
    return f"chunk-{first_height:012d}.cvl"


def chunk_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("chunk-*.cvl"))


def encode_block_record(seq: int, raw: bytes) -> bytes:
    body = _SEQ.pack(seq) + raw
    return _HEAD.pack(BLOCK_MAGIC, len(body), zlib.crc32(body)) + body


def read_chunk(path: Path, *, last: bool) -> tuple[list[BlockRecord], int | None]:
    """All records of one chunk file, and the offset of a torn tail (only allowed in the last file)."""
    data = path.read_bytes()
    out: list[BlockRecord] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _HEAD.size:
            if last:
                return out, pos
            raise LedgerFileError(path, pos, "truncated record header")
        magic, length, crc = _HEAD.unpack_from(data, pos)
        if magic != BLOCK_MAGIC:
            raise LedgerFileError(path, pos, "not a block record (bad magic)")
        end = pos + _HEAD.size + length
        if end > len(data):
            if last:
                return out, pos
            raise LedgerFileError(path, pos, "record runs past the end of the file")
        body = data[pos + _HEAD.size : end]
        if zlib.crc32(body) != crc or length < _SEQ.size:
            raise LedgerFileError(path, pos, "record checksum mismatch")
        (seq,) = _SEQ.unpack_from(body)
        out.append(BlockRecord(seq, body[_SEQ.size :], path, pos))
        pos = end
    return out, None


def read_chunks(directory: Path) -> Iterator[BlockRecord]:
    files = chunk_files(directory)
    for i, path in enumerate(files):
        records, _ = read_chunk(path, last=i == len(files) - 1)
        yield from records


class ChunkWriter:
    """Appends block records to the last chunk; starts a new chunk every `blocks_per_chunk` blocks.
    Construct it after `repair_tail`, so appends never follow a torn record."""

    def __init__(self, directory: Path, blocks_per_chunk: int = 10_000) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.blocks_per_chunk = blocks_per_chunk
        self._file: BinaryIO | None = None
        self._count = 0
        files = chunk_files(self.dir)
        if files:
            self._count = len(read_chunk(files[-1], last=True)[0])
            self._file = open(files[-1], "ab")

    def append(self, height: int, seq: int, raw: bytes) -> None:
        if self._file is None or self._count >= self.blocks_per_chunk:
            self.close()
            self._file = open(self.dir / chunk_name(height), "ab")
            self._count = 0
        self._file.write(encode_block_record(seq, raw))
        self._count += 1

    def flush(self, sync: bool = False) -> None:
        if self._file is not None:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self.flush(sync=True)
            self._file.close()
            self._file = None


def repair_tail(directory: Path) -> int | None:
    """Cut a torn record off the last chunk (a crash mid-write); returns the offset it was cut at."""
    files = chunk_files(directory)
    if not files:
        return None
    _, torn = read_chunk(files[-1], last=True)
    if torn is not None:
        with open(files[-1], "r+b") as f:
            f.truncate(torn)
    return torn


def snapshot_name(height: int) -> str:
    return f"snapshot-{height:012d}.cvs"


def snapshot_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("snapshot-*.cvs"))


def secret_key_id(secret: bytes) -> str:
    return hashlib.sha256(b"conclavium.ledger-secret.v1" + secret).hexdigest()[:16]


def snapshot_digest(plaintext: bytes, secret: bytes) -> str:
    """The digest of a snapshot's state, recorded in the public ledger: HMAC-SHA256 under a key
    derived from the ledger secret, so that it is no dictionary oracle for low-entropy private
    values (as a plain hash of the state would be); hex."""
    key = hmac.new(secret, b"conclavium.snapshot-digest.v1", hashlib.sha256).digest()
    return hmac.new(key, plaintext, hashlib.sha256).hexdigest()


def write_snapshot(path: Path, header: dict[str, Any], plaintext: bytes, secret: bytes) -> str:
    """Seal and write a snapshot atomically; returns its keyed digest (`snapshot_digest`)."""
    digest = snapshot_digest(plaintext, secret)
    header = {**header, "digest": digest, "key_id": secret_key_id(secret)}
    head = json.dumps(header, sort_keys=True).encode()
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(secret).encrypt(nonce, plaintext, head)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(SNAPSHOT_MAGIC + struct.pack(">I", len(head)) + head + sealed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return digest


def _read_head(path: Path, f: BinaryIO) -> tuple[dict[str, Any], bytes]:
    """A snapshot's header, parsed and as the raw bytes the seal authenticates; leaves `f` at the body."""
    start = f.read(8)
    if start[:4] != SNAPSHOT_MAGIC or len(start) < 8:
        raise LedgerFileError(path, 0, "not a snapshot (bad magic)")
    (n,) = struct.unpack_from(">I", start, 4)
    head = f.read(n)
    try:
        return dict(json.loads(head)), head
    except ValueError:
        raise LedgerFileError(path, 8, "snapshot header is not JSON") from None


def read_snapshot_header(path: Path) -> dict[str, Any]:
    """The header alone: reads a few hundred bytes, not the sealed state after them."""
    with open(path, "rb") as f:
        return _read_head(path, f)[0]


def read_snapshot(path: Path, secrets: dict[str, bytes]) -> tuple[dict[str, Any], bytes]:
    """Decrypt and check a snapshot; `secrets` maps key ids to ledger secrets."""
    with open(path, "rb") as f:
        header, head = _read_head(path, f)
        body = f.read()
    n = len(head)
    secret = secrets.get(header.get("key_id", ""))
    if secret is None:
        raise LedgerFileError(path, 8, f"snapshot is sealed with an unknown ledger secret {header.get('key_id')}")
    try:
        plaintext = AESGCM(secret).decrypt(body[:12], body[12:], head)
    except (InvalidTag, ValueError):
        raise LedgerFileError(path, 8 + n, "snapshot does not authenticate (tampered or truncated)") from None
    if not hmac.compare_digest(snapshot_digest(plaintext, secret), str(header.get("digest", ""))):
        raise LedgerFileError(path, 8 + n, "snapshot digest mismatch")
    return header, plaintext
