"""Key files as the CLI and local mode write them: PREFIX.key (PKCS#8 PEM, mode 0600),
PREFIX.pub.pem and PREFIX.cert.pem (self-signed)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from conclavium.crypto.keys import Algorithm, PrivateKey
from conclavium.identity import self_signed_certificate


def write_identity(prefix: Path, name: str, alg: Algorithm = "Ed25519") -> PrivateKey:
    key = PrivateKey.generate(alg)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    key_path = Path(f"{prefix}.key")
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem)
    Path(f"{prefix}.pub.pem").write_text(key.public_key.pem)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    Path(f"{prefix}.cert.pem").write_text(self_signed_certificate(key, name, now))
    return key
