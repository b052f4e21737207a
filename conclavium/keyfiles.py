"""Key files as the CLI and local mode write them: PREFIX.key (PKCS#8 PEM, mode 0600),
PREFIX.pub.pem and PREFIX.cert.pem (self-signed); a member's encryption key for recovery shares
(X25519): PREFIX.enc.key (hex, mode 0600) and PREFIX.enc.pub (hex)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from conclavium.crypto import sealing
from conclavium.crypto.keys import Algorithm, PrivateKey
from conclavium.identity import self_signed_certificate


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def write_encryption_key(prefix: Path) -> str:
    """A new X25519 key pair for recovery shares; returns the public key (hex) `set_member` takes."""
    key = sealing.generate_key()
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _write_secret(Path(f"{prefix}.enc.key"), sealing.private_bytes(key).hex().encode() + b"\n")
    public = sealing.public_bytes(key).hex()
    Path(f"{prefix}.enc.pub").write_text(public + "\n")
    return public


def write_identity(prefix: Path, name: str, alg: Algorithm = "Ed25519") -> PrivateKey:
    key = PrivateKey.generate(alg)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    _write_secret(Path(f"{prefix}.key"), key.pem)
    Path(f"{prefix}.pub.pem").write_text(key.public_key.pem)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    Path(f"{prefix}.cert.pem").write_text(self_signed_certificate(key, name, now))
    return key
