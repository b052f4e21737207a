"""Node messages an attacker can put in the ledger (through the intake, or as a malicious
sequencer appending blocks to the stream): malformed join evidence, forged endorsements and rekeys
sealed to a joining node's public key, and replayed rekeys. Each is refused with a reason, the
joining node takes its secrets only from the genuine, committed endorsement, and the ledger keeps
committing."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import nats
import pytest
from rogue_sequencer import append_entries_after_tip

from conclavium import node_messages, streams
from conclavium.attestation import expected_report_data, make_virtual_evidence
from conclavium.attestation.providers import VirtualSealing
from conclavium.block import Entry, IntakeBatch, decode_block, encode, entry_id
from conclavium.cli.local import _node_status
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e
from conclavium.local.network import LocalNetwork, start_network
from conclavium.local.processes import Process, free_port, service_command
from conclavium.sdk.client import Client
from services.executor.enclave import Generation, LedgerSecrets, NodeKeys, SealedStore


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    n = start_network(tmp_path_factory.mktemp("nodemsg"), redis=False)
    yield n
    n.stop()


def _user(net: LocalNetwork) -> Client:
    key = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    return Client(net.gateway_url, key, **net.trust())


async def _publish_intake(net: LocalNetwork, entries: list[Entry]) -> None:
    nc = await nats.connect(net.nats_url)
    try:
        await nc.jetstream().publish(streams.intake_subject(net.opt.ledger), encode(IntakeBatch(entries=entries)))
    finally:
        await nc.close()


async def _ledger_entries(net: LocalNetwork) -> list[Entry]:
    """Every entry in the ledger stream so far, in order."""
    nc = await nats.connect(net.nats_url)
    js = nc.jetstream()
    stream = streams.ledger_stream(net.opt.ledger)
    try:
        info = await js.stream_info(stream)
        out: list[Entry] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            out += decode_block((await js.get_msg(stream, seq)).data).entries
        return out
    finally:
        await nc.close()


def _node_messages_of(entries: list[Entry], kind: type) -> list[tuple[Entry, Any]]:
    found = []
    for e in entries:
        if e.kind != 2:
            continue
        try:
            msg = node_messages.decode(e.data)
        except Exception:
            continue
        if isinstance(msg, kind):
            found.append((e, msg))
    return found


async def test_join_with_certs_as_a_list_is_invalid_and_the_ledger_keeps_committing(net: LocalNetwork) -> None:
    key = PrivateKey.generate()
    enc = sealing.public_bytes(sealing.generate_key())
    bound = node_messages.bound_keys(key.public_key.spki, enc)
    ev = make_virtual_evidence(bytes.fromhex(node_messages.VIRTUAL_DEV_MEASUREMENT), b"", expected_report_data(bound))
    info = node_messages.NodeInfo(
        id=key.key_id,
        signing_key=key.public_key.pem,
        encryption_key=enc.hex(),
        evidence={"platform": "virtual", "evidence": b64e(ev), "certs": [b64e(b"not a map")]},
        name="certs-list",
    )
    msg = node_messages.Join(v=1, ledger=net.opt.ledger, ts=int(time.time() * 1000), node=info)
    entry = node_messages.make_entry(msg, key)
    await _publish_intake(net, [entry])
    user = _user(net)
    try:
        st = await user.wait(entry_id(entry).hex(), timeout=30)
        assert st["status"] == "Invalid" and st["reason"] == "invalid_node_message", st
        assert "certs" in st["message"], st
        h = await user.put("public:after", "certs-list", 1)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
    finally:
        await user.close()


def _invalid_count(port: int | None, reason: str) -> float:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.search(rf'^conclavium_executor_tx_invalid_total{{reason="{reason}"}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def _extra_executor(net: LocalNetwork, name: str) -> tuple[Process, Path]:
    port = free_port()
    data = net.dir / "nodes" / name
    argv = service_command("conclavium-executor", "services.executor.main")
    argv += ["--ledger", net.opt.ledger, "--nats-url", net.nats_url, "--name", name]
    argv += ["--data-dir", str(data), "--http-port", str(port)]
    return Process(name, argv, net.dir / "logs" / f"{name}.log", port=port), data


def _forged_secrets(service_cert: str) -> LedgerSecrets:
    """What an attacker can seal to a node: the public service certificate, its own service key and
    its own generation of ledger secrets."""
    return LedgerSecrets(PrivateKey.generate("Ed25519"), service_cert, [Generation.create()])


async def test_forged_endorse_and_rekey_for_a_joining_node_are_ignored(net: LocalNetwork) -> None:
    """The attacker knows the joining node's public keys (they are in its join request; here it
    holds them before the node starts) and seals its own secrets to them, in an endorsement and a
    rekey signed in the name of a trusted node. The joining node ignores both, takes the genuine
    endorsement, and its ledger secrets are the service's."""
    user = _user(net)
    extra, data = _extra_executor(net, "executor-7")
    store = SealedStore(data, net.opt.ledger, VirtualSealing(data))
    keys = NodeKeys.load_or_create(store)
    service = await user.service()
    cert = (net.dir / "service_cert.pem").read_text()
    trusted = next(n for n in service["nodes"] if n["status"] == "Trusted")
    attacker = PrivateKey.generate()
    ledger = net.opt.ledger
    forged = _forged_secrets(cert)
    fake_gen = Generation.create()
    endorse = node_messages.Endorse(
        v=1,
        ledger=ledger,
        ts=int(time.time() * 1000),
        sender=trusted["id"],
        node=keys.id,
        cert=cert,
        wrapped_secrets=b64e(forged.wrap(keys.encryption_public, node_messages.secrets_context(ledger, keys.id))),
    )
    tx_key = {"id": fake_gen.id, "public": fake_gen.tx_public.hex(), "signature": b64e(b"\0" * 64)}
    rekey = node_messages.Rekey(
        v=1,
        ledger=ledger,
        ts=int(time.time() * 1000),
        sender=trusted["id"],
        proposal="0" * 64,
        generation=fake_gen.id,
        tx_key=tx_key,
        shares={keys.id: fake_gen.seal_share(ledger, keys.id, keys.encryption_public)},
    )
    forged_entries = [node_messages.make_entry(endorse, attacker), node_messages.make_entry(rekey, attacker)]
    try:
        # Sealed history before the forged block, so that the new node pauses for its secrets and
        # scans ahead from there.
        hashes = [await user.put("private-book", f"before-{i}", i) for i in range(5)]
        for h in hashes:
            assert (await user.wait(h, timeout=30))["status"] == "Committed"
        await append_entries_after_tip(net, forged_entries)
        for e in forged_entries:
            st = await user.wait(entry_id(e).hex(), timeout=30)
            assert st["status"] == "Invalid" and st["reason"] == "bad_signature", st
        h = await user.put("private-book", "between", 1)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
        extra.start()
        extra.wait_ready()
        deadline = time.monotonic() + 90
        st: dict[str, Any] = {}
        while time.monotonic() < deadline:
            (st,) = await _node_status(net.nats_url, ledger, ["executor-7"])
            if st.get("ready"):
                break
            await asyncio.to_thread(net.endorse_nodes)  # its member (bob) endorses it once it joined
            await asyncio.sleep(0.3)
        assert st.get("ready"), st
        held = LedgerSecrets.load(store, keys.id)
        assert held is not None
        assert held.service_key.public_key.pem != forged.service_key.public_key.pem
        ids = {g.id for g in held.generations}
        assert forged.current.id not in ids and fake_gen.id not in ids
        assert (await user.service())["tx_key"]["id"] in ids
        h = await user.put("private-book", "after-join", 2)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
        log = (net.dir / "logs" / "executor-7.log").read_text()
        assert "received the ledger secrets" in log
    finally:
        extra.stop()
        await user.close()


async def test_replayed_rekey_does_not_answer_a_new_rotation(tmp_path: Path) -> None:
    """The genuine rekey of a first rotation, published again once its id has left the replay
    window, right behind the ballots that accept a second rotation (the sequencer is held while they
    queue, so nothing honest can come between): it is refused, the generation never goes back, and
    the second rotation gets a new generation."""
    n = await asyncio.to_thread(
        start_network, tmp_path, redis=False, genesis_config={"tx_validity_ms": 3000, "clock_tolerance_ms": 1000}
    )
    members = [Client(n.gateway_url, n.member_key(i)) for i in range(2)]
    user = _user(n)
    try:
        first_key = (await members[0].service())["tx_key"]["id"]
        p1 = await members[0].propose([{"name": "rotate_ledger_secret", "args": {}}])
        await members[0].wait(p1["tx_hash"])
        for m in members:
            await m.wait((await m.vote(p1["proposal_id"], True))["tx_hash"])
        deadline = time.monotonic() + 30
        while (second := (await members[0].service())["tx_key"]["id"]) == first_key:
            assert time.monotonic() < deadline, "no new generation after the first rotation"
            await asyncio.sleep(0.2)
        old_entry, old = _node_messages_of(await _ledger_entries(n), node_messages.Rekey)[0]
        assert old.generation == second and old.proposal == p1["proposal_id"]
        await asyncio.sleep(3.5)  # the old rekey's id leaves the replay window
        p2 = await members[0].propose([{"name": "rotate_ledger_secret", "args": {}}])
        await members[0].wait(p2["tx_hash"])
        sequencer = n.procs["sequencer-0"]
        await asyncio.to_thread(sequencer.stop)
        votes = [(await m.vote(p2["proposal_id"], True))["tx_hash"] for m in members]
        await _publish_intake(n, [old_entry])
        await asyncio.to_thread(sequencer.start)
        await asyncio.to_thread(sequencer.wait_ready)
        for v in votes:
            assert (await members[0].wait(v, timeout=30))["status"] == "Committed"
        # the first copy stays Committed under this id; the refused copy shows in the executors' counts
        ports = [p.port for name, p in n.procs.items() if name.startswith("executor-")]
        deadline = time.monotonic() + 10
        while [_invalid_count(port, "stale_rekey") for port in ports] != [1.0] * len(ports):
            assert time.monotonic() < deadline, [_invalid_count(port, "stale_rekey") for port in ports]
            await asyncio.sleep(0.2)
        deadline = time.monotonic() + 30
        while (third := (await members[0].service())["tx_key"]["id"]) in (first_key, second):
            assert time.monotonic() < deadline, "no new generation after the second rotation"
            await asyncio.sleep(0.2)
        rekeys = _node_messages_of(await _ledger_entries(n), node_messages.Rekey)
        assert any(msg.generation == third and msg.proposal == p2["proposal_id"] for _, msg in rekeys)
        h = await user.put("private-book", "after-rotations", 3)
        assert (await user.wait(h, timeout=30))["status"] == "Committed"
        assert await user.get("private-book", "after-rotations") == 3
    finally:
        for c in (*members, user):
            await c.close()
        await asyncio.to_thread(n.stop)
