"""Node keys and ledger secrets on disk only sealed, bound to ledger, node and purpose."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conclavium.attestation.providers import MemoryOnly, VirtualSealing
from services.executor.enclave import (
    LEDGER_SECRETS_FILE,
    NODE_KEYS_FILE,
    LedgerSecrets,
    NodeKeys,
    SealedStore,
    SealingError,
)

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def store(d: Path, ledger: str = "L") -> SealedStore:
    return SealedStore(d, ledger, VirtualSealing(d))


def test_round_trip_and_nothing_in_clear(tmp_path: Path) -> None:
    s = store(tmp_path)
    keys = NodeKeys.load_or_create(s)
    secrets = LedgerSecrets.create("L", NOW)
    secrets.save(s, keys.id)
    again = NodeKeys.load_or_create(store(tmp_path))
    assert again.id == keys.id and again.encryption_private == keys.encryption_private
    loaded = LedgerSecrets.load(store(tmp_path), keys.id)
    assert loaded is not None and loaded.to_bytes() == secrets.to_bytes()
    blobs = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name != "dev-sealing-key.INSECURE")
    for secret in (secrets.ledger_secret, secrets.current.tx_private, keys.encryption_private, keys.signing.pem):
        assert secret not in blobs
    assert b"PRIVATE KEY" not in blobs
    assert LedgerSecrets.load_for_audit(tmp_path) is not None


def test_bound_to_ledger_node_purpose_and_key(tmp_path: Path) -> None:
    s = store(tmp_path)
    keys = NodeKeys.load_or_create(s)
    LedgerSecrets.create("L", NOW).save(s, keys.id)
    with pytest.raises(SealingError, match="ledger"):
        LedgerSecrets.load(store(tmp_path, "other"), keys.id)
    with pytest.raises(SealingError, match="another node"):
        LedgerSecrets.load(s, "someone-else")
    # A file renamed to serve another purpose does not open as it.
    (tmp_path / NODE_KEYS_FILE).write_bytes((tmp_path / LEDGER_SECRETS_FILE).read_bytes())
    with pytest.raises(SealingError, match="purpose"):
        NodeKeys.load_or_create(s)
    # The header is authenticated: changing the node it names breaks the seal.
    raw = (tmp_path / LEDGER_SECRETS_FILE).read_bytes()
    n = int.from_bytes(raw[8:12], "big")
    head = json.loads(raw[12 : 12 + n])
    forged = json.dumps({**head, "node": "x" * len(head["node"])}, sort_keys=True).encode()
    assert len(forged) == n
    (tmp_path / LEDGER_SECRETS_FILE).write_bytes(raw[:12] + forged + raw[12 + n :])
    with pytest.raises(SealingError, match="does not open"):
        LedgerSecrets.load(s, "x" * len(head["node"]))
    # Another enclave (another sealing key) cannot open it.
    (tmp_path / "dev-sealing-key.INSECURE").write_bytes(b"\1" * 32)
    (tmp_path / LEDGER_SECRETS_FILE).write_bytes(raw)
    with pytest.raises(SealingError, match="does not open"):
        LedgerSecrets.load(store(tmp_path), keys.id)


def test_clear_files_of_earlier_versions_are_sealed_and_removed(tmp_path: Path) -> None:
    from conclavium.crypto import sealing
    from conclavium.crypto.keys import PrivateKey

    sk, ek = PrivateKey.generate("Ed25519"), sealing.generate_key()
    (tmp_path / "node_signing.pem").write_bytes(sk.pem)
    (tmp_path / "node_encryption.key").write_bytes(sealing.private_bytes(ek))
    secrets = LedgerSecrets.create("L", NOW)
    (tmp_path / "ledger_secrets.json").write_bytes(secrets.to_bytes())
    s = store(tmp_path)
    keys = NodeKeys.load_or_create(s)
    assert keys.id == sk.key_id
    assert LedgerSecrets.load(s, keys.id) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dev-sealing-key.INSECURE",
        LEDGER_SECRETS_FILE,
        NODE_KEYS_FILE,
    ]


def test_memory_only_platform_writes_nothing(tmp_path: Path) -> None:
    s = SealedStore(tmp_path, "L", MemoryOnly())
    keys = NodeKeys.load_or_create(s)
    LedgerSecrets.create("L", NOW).save(s, keys.id)
    assert list(tmp_path.iterdir()) == []
    assert LedgerSecrets.load(s, keys.id) is None
    assert NodeKeys.load_or_create(s).id != keys.id
