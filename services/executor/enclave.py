"""Keys that exist only inside the executor: the node's own keys and the ledger's secrets.

In a TEE these files are sealed to the enclave's identity; in the `virtual` development TEE they
are plain files readable only by the executor's user (mode 0600). Nothing outside this process
ever receives them, except the ledger secrets wrapped (HPKE) to an attested joining node's key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import x25519

from conclavium import node_messages
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.identity import service_certificate
from conclavium.ledger_files import secret_key_id


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class NodeKeys:
    signing: PrivateKey
    encryption: x25519.X25519PrivateKey

    @property
    def id(self) -> str:
        return self.signing.key_id

    @property
    def encryption_public(self) -> bytes:
        return sealing.public_bytes(self.encryption)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> NodeKeys:
        data_dir.mkdir(parents=True, exist_ok=True)
        sk, ek = data_dir / "node_signing.pem", data_dir / "node_encryption.key"
        if sk.exists() and ek.exists():
            return cls(PrivateKey.from_file(str(sk)), sealing.load_private(ek.read_bytes()))
        keys = cls(PrivateKey.generate("Ed25519"), sealing.generate_key())
        _write_private(sk, keys.signing.pem)
        _write_private(ek, sealing.private_bytes(keys.encryption))
        return keys


@dataclass
class Generation:
    """One generation of the ledger's symmetric secret and its transaction (X25519) key; rotation
    adds a generation, and old ones stay so history remains readable."""

    ledger_secret: bytes
    tx_key: x25519.X25519PrivateKey

    # Derived values are cached: execution looks them up for every private transaction.
    @cached_property
    def id(self) -> str:
        return secret_key_id(self.ledger_secret)

    @cached_property
    def tx_public(self) -> bytes:
        return sealing.public_bytes(self.tx_key)

    @cached_property
    def tx_private(self) -> bytes:
        return sealing.private_bytes(self.tx_key)

    @cached_property
    def write_digest_key(self) -> bytes:
        """Keys the write digests of private transactions (see `LedgerMachine._private_digest`)."""
        return hmac.new(self.ledger_secret, b"conclavium.write-digest.v1", hashlib.sha256).digest()

    @classmethod
    def create(cls) -> Generation:
        return cls(os.urandom(32), sealing.generate_key())

    def to_json(self) -> dict[str, str]:
        return {
            "ledger_secret": base64.b64encode(self.ledger_secret).decode(),
            "tx_key": base64.b64encode(sealing.private_bytes(self.tx_key)).decode(),
        }

    @classmethod
    def from_json(cls, d: dict[str, str]) -> Generation:
        return cls(base64.b64decode(d["ledger_secret"]), sealing.load_private(base64.b64decode(d["tx_key"])))

    def seal_share(self, ledger: str, node_id: str, recipient: bytes) -> str:
        """This generation sealed to one trusted node's encryption key (base64), for a rekey."""
        ctx = node_messages.rekey_context(ledger, node_id, self.id)
        return base64.b64encode(sealing.seal(json.dumps(self.to_json()).encode(), recipient, ctx)).decode()

    @classmethod
    def open_share(cls, share: str, ledger: str, generation: str, keys: NodeKeys) -> Generation:
        """Open the share of a rekey sealed to this node; ValueError unless it holds `generation`."""
        ctx = node_messages.rekey_context(ledger, keys.id, generation)
        try:
            gen = cls.from_json(json.loads(sealing.open_sealed(base64.b64decode(share), keys.encryption, ctx)))
        except KeyError as e:
            raise ValueError(f"share is malformed: {e}") from None
        if gen.id != generation:
            raise ValueError("the share holds another generation")
        return gen


@dataclass
class LedgerSecrets:
    """The service identity key and certificate, and every generation of the ledger secrets."""

    service_key: PrivateKey
    service_cert: str
    generations: list[Generation]

    @classmethod
    def create(cls, ledger: str, now: dt.datetime) -> LedgerSecrets:
        key = PrivateKey.generate("Ed25519")
        return cls(key, service_certificate(key, ledger, now), [Generation.create()])

    @property
    def current(self) -> Generation:
        return self.generations[-1]

    @property
    def ledger_secret(self) -> bytes:
        return self.current.ledger_secret

    def by_id(self, gen_id: str) -> Generation | None:
        for g in self.generations:
            if g.id == gen_id:
                return g
        return None

    def add(self, gen: Generation) -> None:
        if self.by_id(gen.id) is None:
            self.generations.append(gen)

    def secret_map(self) -> dict[str, bytes]:
        return {g.id: g.ledger_secret for g in self.generations}

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "service_key": self.service_key.pem.decode(),
                "service_cert": self.service_cert,
                "generations": [g.to_json() for g in self.generations],
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LedgerSecrets:
        d = json.loads(data)
        return cls(
            PrivateKey.load(d["service_key"]),
            d["service_cert"],
            [Generation.from_json(g) for g in d["generations"]],
        )

    def save(self, data_dir: Path) -> None:
        _write_private(data_dir / "ledger_secrets.json", self.to_bytes())

    @classmethod
    def load(cls, data_dir: Path) -> LedgerSecrets | None:
        p = data_dir / "ledger_secrets.json"
        return cls.from_bytes(p.read_bytes()) if p.exists() else None

    def wrap(self, recipient: bytes, context: bytes) -> bytes:
        return sealing.seal(self.to_bytes(), recipient, context)

    @classmethod
    def unwrap(cls, box: bytes, key: x25519.X25519PrivateKey, context: bytes) -> LedgerSecrets:
        return cls.from_bytes(sealing.open_sealed(box, key, context))

    @classmethod
    def open_endorsement(cls, wrapped: str, ledger: str, keys: NodeKeys) -> LedgerSecrets:
        """The secrets an endorsement sealed to this node; ValueError when they do not open."""
        return cls.unwrap(base64.b64decode(wrapped), keys.encryption, node_messages.secrets_context(ledger, keys.id))
