"""Keys that exist only inside the executor: the node's own keys and the ledger's secrets.

On disk they are only ever sealed (`SealedStore`): AES-256-GCM under a key the TEE derives for
this enclave (SEV-SNP derived key, Gramine's MRENCLAVE key; the `virtual` development TEE keeps a
key file named as insecure), bound to the ledger, the node and the file's purpose. A TDX node has
no sealing key and writes none of them: it joins again after a restart. Nothing outside this
process ever receives them, except the ledger secrets wrapped (HPKE) to an attested joining node.
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

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conclavium import node_messages
from conclavium.attestation.providers import (
    VIRTUAL_SEALING_KEY_FILE,
    SealingKeySource,
    VirtualSealing,
)
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


SEALED_MAGIC = b"CNVSEAL1"
NODE_KEYS_FILE = "node_keys.sealed"
LEDGER_SECRETS_FILE = "ledger_secrets.sealed"
# Files of earlier versions, in clear: sealed and removed on first start (virtual TEE only).
PLAIN_NODE_KEYS = ("node_signing.pem", "node_encryption.key")
PLAIN_LEDGER_SECRETS = "ledger_secrets.json"


class SealingError(ValueError):
    """A sealed file does not open: another enclave, ledger, node or purpose, or tampered."""


class SealedStore:
    """Sealed files in an executor's data directory. Format: magic, u32 header length, the JSON
    header {v, ledger, node, purpose, source}, a 12-byte nonce, then AES-256-GCM ciphertext whose
    associated data is magic + header: a file opens only for its own ledger, node and purpose."""

    def __init__(self, data_dir: Path, ledger: str, source: SealingKeySource) -> None:
        self.data_dir = data_dir
        self.ledger = ledger
        self.source = source
        self._key = source.derive()

    @property
    def persistent(self) -> bool:
        """False on a platform without a sealing key (TDX): nothing secret is written."""
        return self._key is not None

    def path(self, name: str) -> Path:
        return self.data_dir / name

    def write(self, name: str, purpose: str, node: str, data: bytes) -> None:
        if self._key is None:
            return
        head = json.dumps(
            {"v": 1, "ledger": self.ledger, "node": node, "purpose": purpose, "source": self.source.name},
            sort_keys=True,
        ).encode()
        nonce = os.urandom(12)
        aad = SEALED_MAGIC + head
        blob = SEALED_MAGIC + len(head).to_bytes(4, "big") + head + nonce
        _write_private(self.path(name), blob + AESGCM(self._key).encrypt(nonce, data, aad))

    def read(self, name: str, purpose: str) -> tuple[str, bytes] | None:
        """(node, plaintext) of a sealed file, None if absent; SealingError if it does not open here."""
        path = self.path(name)
        if self._key is None or not path.exists():
            return None
        head, nonce, body = _split_sealed(path)
        try:
            meta = json.loads(head)
        except ValueError:
            raise SealingError(f"{path}: the header is not JSON") from None
        if meta.get("ledger") != self.ledger or meta.get("purpose") != purpose:
            raise SealingError(
                f"{path}: sealed for ledger {meta.get('ledger')!r}, purpose {meta.get('purpose')!r}, "
                f"not {self.ledger!r}, {purpose!r}"
            )
        try:
            plain = AESGCM(self._key).decrypt(nonce, body, SEALED_MAGIC + head)
        except InvalidTag:
            raise SealingError(
                f"{path} does not open with this enclave's sealing key ({self.source.name}): "
                "another measurement or policy, or the file was altered"
            ) from None
        return str(meta.get("node", "")), plain

    @classmethod
    def for_audit(cls, data_dir: Path) -> SealedStore | None:
        """The store of a `virtual` node's directory, read outside the executor (offline audit):
        only the development key file makes that possible; a real TEE's files open only inside it."""
        path = data_dir / LEDGER_SECRETS_FILE
        if not (data_dir / VIRTUAL_SEALING_KEY_FILE).exists() or not path.exists():
            return None
        try:
            ledger = json.loads(_split_sealed(path)[0]).get("ledger", "")
        except (SealingError, ValueError):
            return None
        return cls(data_dir, str(ledger), VirtualSealing(data_dir))


def _split_sealed(path: Path) -> tuple[bytes, bytes, bytes]:
    raw = path.read_bytes()
    if raw[: len(SEALED_MAGIC)] != SEALED_MAGIC or len(raw) < len(SEALED_MAGIC) + 4:
        raise SealingError(f"{path} is not a sealed file (bad magic)")
    n = int.from_bytes(raw[len(SEALED_MAGIC) : len(SEALED_MAGIC) + 4], "big")
    start = len(SEALED_MAGIC) + 4
    if len(raw) < start + n + 12 + 16:
        raise SealingError(f"{path} is truncated")
    return raw[start : start + n], raw[start + n : start + n + 12], raw[start + n + 12 :]


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

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"signing": self.signing.pem.decode(), "encryption": base64.b64encode(self.encryption_private).decode()}
        ).encode()

    @property
    def encryption_private(self) -> bytes:
        return sealing.private_bytes(self.encryption)

    @classmethod
    def load_or_create(cls, store: SealedStore) -> NodeKeys:
        """The node's keys, unsealed; new ones (sealed at once, when the platform can) otherwise.
        A file sealed for another node id than the keys it holds is refused."""
        store.data_dir.mkdir(parents=True, exist_ok=True)
        opened = store.read(NODE_KEYS_FILE, "node-keys")
        if opened is not None:
            node, plain = opened
            try:
                d = json.loads(plain)
                keys = cls(PrivateKey.load(d["signing"]), sealing.load_private(base64.b64decode(d["encryption"])))
            except (ValueError, KeyError, TypeError) as e:
                raise SealingError(f"{store.path(NODE_KEYS_FILE)}: malformed node keys: {e}") from None
            if keys.id != node:
                raise SealingError(f"{store.path(NODE_KEYS_FILE)} holds the keys of another node")
            return keys
        sk, ek = (store.path(n) for n in PLAIN_NODE_KEYS)
        if sk.exists() and ek.exists():
            keys = cls(PrivateKey.from_file(str(sk)), sealing.load_private(ek.read_bytes()))
        else:
            keys = cls(PrivateKey.generate("Ed25519"), sealing.generate_key())
        store.write(NODE_KEYS_FILE, "node-keys", keys.id, keys.to_bytes())
        if store.persistent:
            for plain in (sk, ek):
                plain.unlink(missing_ok=True)
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

    def save(self, store: SealedStore, node: str) -> None:
        """Sealed to this enclave, for this ledger and node; on TDX (no sealing key) not at all."""
        store.write(LEDGER_SECRETS_FILE, "ledger-secrets", node, self.to_bytes())
        if store.persistent:
            store.path(PLAIN_LEDGER_SECRETS).unlink(missing_ok=True)

    @classmethod
    def load(cls, store: SealedStore, node: str) -> LedgerSecrets | None:
        """The sealed secrets of this node (an earlier version's clear file is taken once and
        sealed); SealingError when the file was sealed for another node."""
        opened = store.read(LEDGER_SECRETS_FILE, "ledger-secrets")
        if opened is not None:
            sealed_for, plain = opened
            if sealed_for != node:
                raise SealingError(f"{store.path(LEDGER_SECRETS_FILE)} was sealed for another node")
            return cls.from_bytes(plain)
        legacy = store.path(PLAIN_LEDGER_SECRETS)
        if legacy.exists():
            secrets = cls.from_bytes(legacy.read_bytes())
            secrets.save(store, node)
            return secrets
        return None

    @classmethod
    def load_for_audit(cls, data_dir: Path) -> LedgerSecrets | None:
        """A `virtual` node's secrets read offline (its development key file); None otherwise."""
        store = SealedStore.for_audit(data_dir)
        opened = store.read(LEDGER_SECRETS_FILE, "ledger-secrets") if store is not None else None
        return cls.from_bytes(opened[1]) if opened is not None else None

    def wrap(self, recipient: bytes, context: bytes) -> bytes:
        return sealing.seal(self.to_bytes(), recipient, context)

    @classmethod
    def unwrap(cls, box: bytes, key: x25519.X25519PrivateKey, context: bytes) -> LedgerSecrets:
        return cls.from_bytes(sealing.open_sealed(box, key, context))

    @classmethod
    def open_endorsement(cls, wrapped: str, ledger: str, keys: NodeKeys) -> LedgerSecrets:
        """The secrets an endorsement sealed to this node; ValueError when they do not open."""
        return cls.unwrap(base64.b64decode(wrapped), keys.encryption, node_messages.secrets_context(ledger, keys.id))
