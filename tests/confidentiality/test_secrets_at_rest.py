"""No secret lies in clear at rest: after private traffic through real processes (three executors,
sequencers, gateway, NATS, Redis), every file under the network's directory (each executor's data
directory, the NATS store, the Redis dump, every log) and every Redis key and value is searched for
every secret's bytes raw, hex, base64 and PEM: node private keys, the service key, every ledger
secret and transaction key, and the private values written. Then a stopped executor unseals its
keys (virtual TEE) on restart and catches up."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives import serialization

from conclavium.attestation.providers import VIRTUAL_SEALING_KEY_FILE, VirtualSealing
from conclavium.cli.local import _node_status
from conclavium.crypto.keys import PrivateKey
from conclavium.ledger_files import read_snapshot, snapshot_digest
from conclavium.local.network import LocalNetwork, start_network
from conclavium.sdk.client import Client
from services.executor.enclave import LedgerSecrets, NodeKeys, SealedStore


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    n = start_network(tmp_path_factory.mktemp("atrest"), redis=True, snapshot_every=40)
    yield n
    n.stop()


def _client(net: LocalNetwork) -> Client:
    key = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    return Client(net.gateway_url, key, **net.trust())


def _raw_private(key: PrivateKey) -> bytes:
    return key.crypto_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def _encodings(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode(), b64, b64.rstrip(b"=")]
    forms.append(base64.urlsafe_b64encode(secret).rstrip(b"="))
    return forms


async def _ready(net: LocalNetwork, name: str, at_least: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        try:
            (st,) = await _node_status(net.nats_url, net.opt.ledger, [name])
            if st.get("ready") and (st.get("executed_height") or 0) >= at_least:
                return st
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"{name} not ready at height {at_least} after {timeout}s: {st}")


def _executor_secrets(d: Path, ledger: str) -> tuple[NodeKeys, LedgerSecrets]:
    store = SealedStore(d, ledger, VirtualSealing(d))
    keys = NodeKeys.load_or_create(store)
    secrets = LedgerSecrets.load(store, keys.id)
    assert secrets is not None, f"{d} holds no sealed ledger secrets"
    return keys, secrets


async def test_no_secret_in_clear_at_rest_and_a_restart_unseals(net: LocalNetwork) -> None:
    tag = time.time_ns() % 10**9
    values = [f"PRIVATE-{tag}-{i}-diagnosis" for i in range(100)]
    c = _client(net)
    try:
        hashes = [await c.put("clinic", f"patient-{i}", {"v": v}) for i, v in enumerate(values[:60])]
        for h in hashes:
            assert (await c.wait(h))["status"] == "Committed"
        victim = net.procs["executor-1"]
        await asyncio.to_thread(victim.stop)
        hashes = [await c.put("clinic", f"patient-{i}", {"v": v}) for i, v in enumerate(values[60:], 60)]
        for h in hashes:
            assert (await c.wait(h))["status"] == "Committed"
        (target,) = await _node_status(net.nats_url, net.opt.ledger, ["executor-0"])
        await asyncio.to_thread(victim.start)
        st = await _ready(net, "executor-1", target["executed_height"])
        assert st["root"] is not None
        assert await c.get("clinic", "patient-99") == {"v": values[99]}
    finally:
        await c.close()
    log = (net.dir / "logs" / "executor-1.log").read_text()
    assert "restored height" in log and "blocks replayed from local chunks" in log
    await asyncio.sleep(1.0)

    ledger = net.opt.ledger
    secrets: dict[str, bytes] = {}
    for d in sorted((net.dir / "nodes").glob("executor-*")):
        keys, ls = _executor_secrets(d, ledger)
        assert not (d / "ledger_secrets.json").exists() and not (d / "node_signing.pem").exists()
        secrets[f"{d.name} signing key"] = _raw_private(keys.signing)
        secrets[f"{d.name} signing key PEM body"] = b"".join(keys.signing.pem.splitlines()[1:-1])
        secrets[f"{d.name} encryption key"] = keys.encryption_private
        secrets["service key"] = _raw_private(ls.service_key)
        secrets["service key PEM body"] = b"".join(ls.service_key.pem.splitlines()[1:-1])
        for g in ls.generations:
            secrets[f"ledger secret {g.id}"] = g.ledger_secret
            secrets[f"tx key {g.id}"] = g.tx_private
            secrets[f"write digest key {g.id}"] = g.write_digest_key
    assert len({v for k, v in secrets.items() if k.startswith("ledger secret")}) >= 1
    needles: list[tuple[str, bytes]] = []
    for name, secret in secrets.items():
        needles += [(name, form) for form in _encodings(secret)]
    for v in values:
        needles += [(f"private value {v}", form) for form in (v.encode(), base64.b64encode(v.encode())[:-4])]
    # Snapshot digests are keyed: the plain SHA-256 of a snapshot's state (a dictionary oracle for
    # low-entropy private values) is recorded nowhere, the keyed one is what the ledger holds.
    snapshots = sorted((net.dir / "nodes").glob("executor-*/snapshots/*.cvs"))
    assert snapshots
    all_secrets = {g.id: g.ledger_secret for g in ls.generations}
    for path in snapshots:
        header, plaintext = read_snapshot(path, all_secrets)
        assert header["digest"] == snapshot_digest(plaintext, all_secrets[header["key_id"]])
        plain_hash = hashlib.sha256(plaintext).digest()
        assert header["digest"] != plain_hash.hex()
        needles += [(f"unkeyed digest of {path.name}", form) for form in _encodings(plain_hash)]

    haystack: list[tuple[str, bytes]] = []
    files = [f for f in net.dir.rglob("*") if f.is_file() and f.name != VIRTUAL_SEALING_KEY_FILE]
    assert any("nats" in f.parts for f in files) and any(f.suffix == ".log" for f in files)
    assert any(f.name.startswith("snapshot") or "snapshots" in f.parts for f in files)
    for f in files:
        haystack.append((str(f.relative_to(net.dir)), f.read_bytes()))
    r = aioredis.from_url(net.redis_url)
    try:
        async for k in r.scan_iter("*"):
            kind = (await r.type(k)).decode()
            v = await r.get(k) if kind == "string" else repr(await r.dump(k)).encode()
            haystack.append((f"redis {k!r}", k + b" " + (v or b"")))
    finally:
        await r.aclose()
    found = [(name, where) for name, form in needles for where, blob in haystack if form in blob]
    assert not found, f"secrets in clear at rest: {found[:10]}"
    # The members' and users' own key files of the local network lie beside, and the attestation
    # service (outside the TEE) keeps its own signing key: neither is an executor's secret.
    services = [
        blob
        for where, blob in haystack
        if where.startswith(("nodes/", "logs/", "redis ")) and not where.startswith("nodes/attestation/")
    ]
    assert b"PRIVATE KEY" not in b"".join(services)
