"""`conclavium ledger audit` on a half-private ledger written by real processes: it passes with the
executor's secrets (everything replayed, state recomputed at the recorded snapshot heights) and
without them (a member's copy of the files: what needs no plaintext, and a count of what it could
not check); a tampered ledger file is caught in both modes, with the reason."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from conclavium.block import block_hash as hash_of
from conclavium.block import decode_block, encode
from conclavium.crypto.keys import PrivateKey
from conclavium.ledger_files import chunk_files, encode_block_record, read_chunk, snapshot_files
from conclavium.local.network import LocalNetwork, start_network
from conclavium.sdk.client import Client, ClientError

AUDIT = [str(Path(sys.executable).parent / "conclavium"), "ledger", "audit"]
TXS = 240  # half of them sealed, as the default benchmark writes
# A joiner's endorsement may be submitted again before the first copy is applied (on a busy host);
# the later copy ends Invalid `already_endorsed`, as block application must end an entry: no fault.
BOOTSTRAP_RACES = {"already_endorsed"}


def audit(directory: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    p = subprocess.run([*AUDIT, *flags, str(directory)], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    return p.returncode, json.loads(p.stdout)


async def _write(net: LocalNetwork) -> None:
    key = PrivateKey.from_file(str(net.dir / net.users[0]["key"]))
    async with Client(net.gateway_url, key, **net.trust()) as c:
        for half in range(2):
            hashes = await asyncio.gather(
                *(
                    c.put("audit-private" if i % 2 else "public:audit", f"k{i}", {"n": i})
                    for i in range(half * TXS // 2, (half + 1) * TXS // 2)
                )
            )
            for h in hashes:
                assert (await c.wait(h))["status"] == "Committed"
            if half == 0:
                await _raise_quorum(net)
        # the nodes record their snapshot digests in the ledger a moment after writing the files,
        # with the next blocks they execute: keep blocks coming until two nodes' digests agree
        snapshots = net.dir / "nodes" / "executor-0" / "snapshots"
        deadline = time.monotonic() + 30
        for tick in range(1000):
            await c.wait(await c.put("public:audit", f"tick{tick}", tick))
            heights = [int(p.stem.split("-")[1]) for p in snapshot_files(snapshots)]
            rows = []
            for height in heights:
                try:
                    rows.append(await c.get("public:sys.snapshots", f"{height:012d}"))
                except ClientError as e:
                    assert e.status == 404, e
            if any(len(r.get("nodes", [])) > 1 for r in rows if isinstance(r, dict)):
                return
            assert time.monotonic() < deadline, rows
            await asyncio.sleep(0.2)


async def _raise_quorum(net: LocalNetwork) -> None:
    """Governance changes the commit quorum mid-ledger: the audit must follow it in both modes."""
    members = [Client(net.gateway_url, net.member_key(i), ledger=net.opt.ledger) for i in range(2)]
    try:
        p = await members[0].propose([{"name": "set_commit_quorum", "args": {"quorum": 3}}])
        assert (await members[0].wait(p["tx_hash"]))["status"] == "Committed"
        for m in members:
            assert (await m.wait((await m.vote(p["proposal_id"], True))["tx_hash"]))["status"] == "Committed"
        assert (await members[0].proposal(p["proposal_id"]))["state"] == "Accepted"
    finally:
        for m in members:
            await m.close()


@pytest.fixture(scope="module")
def stopped_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    """A network that wrote a half-private ledger (snapshots every 60 entries) and then stopped."""
    net = start_network(tmp_path_factory.mktemp("audit"), redis=False, snapshot_every=60)
    try:
        asyncio.run(_write(net))
    finally:
        net.stop()
    yield net


def _node(net: LocalNetwork) -> Path:
    return net.dir / "nodes" / "executor-0"


def _member_copy(net: LocalNetwork, dest: Path) -> Path:
    """What a member without the secrets audits: the ledger chunks and snapshot files, nothing else."""
    for sub in ("ledger", "snapshots"):
        shutil.copytree(_node(net) / sub, dest / sub)
    return dest


def test_audit_with_secrets_replays_everything(stopped_net: LocalNetwork) -> None:
    code, report = audit(_node(stopped_net))
    assert code == 0 and report["ok"], report
    assert report["mode"] == "with secrets" and report["not_checked"] == {}
    checked = report["checked"]
    assert checked["entries_executed"] >= TXS and set(checked["entries_invalid"]) <= BOOTSTRAP_RACES
    assert checked["block_roots_recomputed"] >= 1 and checked["commit_signatures_valid"] >= checked["blocks_committed"]
    assert checked["committed_height"] > report["height"] // 2
    snaps = checked["snapshots"]
    assert snaps["files_decrypted"] >= 1 and snaps["state_recomputed_and_compared"] >= 1, snaps
    assert snaps["recorded_digests_agreed_by_several_nodes"] >= 1, snaps


def test_audit_without_secrets_checks_what_needs_no_plaintext(stopped_net: LocalNetwork, tmp_path: Path) -> None:
    for args in ((_member_copy(stopped_net, tmp_path / "copy"),), ("--without-secrets", _node(stopped_net))):
        code, report = audit(args[-1], *args[:-1])
        assert code == 0 and report["ok"], report
        assert report["mode"] == "without secrets"
        missing = report["not_checked"]
        assert missing["sealed_entries_not_replayed"] == TXS // 2, missing
        assert missing["blocks_root_not_recomputed"] >= 1 and missing["snapshot_files_not_decrypted"] >= 1
        checked = report["checked"]
        assert checked["entries_executed"] >= TXS // 2 and checked["block_roots_recomputed"] >= 1
        assert checked["trusted_nodes"] == 3 and checked["quorum"] == 3, "followed from governance"
        assert checked["blocks_committed"] >= 1
        assert checked["commit_signatures_valid"] >= 2 * checked["blocks_committed"]
        assert set(checked["entries_invalid"]) <= BOOTSTRAP_RACES
        assert checked["committed_height"] > report["height"] // 2
        assert checked["snapshots"]["recorded_digests"] >= 1 and checked["snapshots"]["files_checked"] >= 1


def _blocks(directory: Path) -> tuple[Path, list[tuple[int, bytes]]]:
    (path,) = chunk_files(directory / "ledger")
    records, _ = read_chunk(path, last=True)
    return path, [(r.seq, r.raw) for r in records]


def _write_blocks(path: Path, blocks: list[tuple[int, bytes]]) -> None:
    path.write_bytes(b"".join(encode_block_record(seq, raw) for seq, raw in blocks))


def _middle_block_with_entries(blocks: list[tuple[int, bytes]]) -> int:
    candidates = [i for i, (_, raw) in enumerate(blocks) if len(decode_block(raw).entries) >= 2]
    return candidates[len(candidates) // 2]


def _tampered_copies(net: LocalNetwork, root: Path) -> dict[str, Path]:
    """Copies of the node's directory, each with one kind of tampering (checksums made to fit)."""
    copies = {}
    # 1. one block's bytes changed in place: the next block no longer names its hash
    copies["in_place"] = root / "in_place"
    shutil.copytree(_node(net), copies["in_place"])
    path, blocks = _blocks(copies["in_place"])
    i = _middle_block_with_entries(blocks)
    seq, raw = blocks[i]
    block = decode_block(raw)
    entry = block.entries[0]
    block = msgspec.structs.replace(block, entries=[entry, entry, *block.entries[1:]])
    blocks[i] = (seq, encode(block))
    _write_blocks(path, blocks)
    # 2. an entry dropped from a block and every later block re-chained: the chain holds, but the
    #    nodes' commit signatures name the original block hashes
    copies["rechained"] = root / "rechained"
    shutil.copytree(_node(net), copies["rechained"])
    path, blocks = _blocks(copies["rechained"])
    i = _middle_block_with_entries(blocks)
    prev = hash_of(blocks[i - 1][1])
    for j in range(i, len(blocks)):
        seq, raw = blocks[j]
        block = msgspec.structs.replace(decode_block(raw), prev=prev)
        if j == i:
            block = msgspec.structs.replace(block, entries=block.entries[1:])
        raw = encode(block)
        blocks[j] = (seq, raw)
        prev = hash_of(raw)
    _write_blocks(path, blocks)
    return copies


def test_tampered_ledger_files_are_caught_in_both_modes(stopped_net: LocalNetwork, tmp_path: Path) -> None:
    copies = _tampered_copies(stopped_net, tmp_path)
    for flags in ((), ("--without-secrets",)):
        code, report = audit(copies["in_place"], *flags)
        assert code == 1 and not report["ok"], report
        assert "block refused" in report["error"] and "previous block's hash" in report["error"], report
        assert "chunk-" in report["error"] and "at byte" in report["error"]

        code, report = audit(copies["rechained"], *flags)
        assert code == 1 and not report["ok"], report
        assert any("signed block hash" in p for p in report["problems"]), report["problems"]


def test_files_that_cannot_be_audited_get_a_reason(stopped_net: LocalNetwork, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, report = audit(tmp_path / "empty")
    assert code == 1 and "no ledger chunks" in report["error"], report
    headless = _member_copy(stopped_net, tmp_path / "headless")
    path, blocks = _blocks(headless)
    _write_blocks(path, blocks[1:])  # a node rebuilt from a snapshot holds only what came after it
    code, report = audit(headless)
    assert code == 1 and "do not start at genesis" in report["error"], report
