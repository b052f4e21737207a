"""Backup and restore of the ledger's streams (docs/operations.md, "Backup and restore of the NATS
streams"), through the JetStream API requests `nats stream backup` and `nats stream restore` send
(the `nats` CLI is not part of the test environment): after a load, the sequencer and the gateway
are stopped, both streams are backed up, then deleted (the operator mistake a backup is for), and
restored; once the sequencer and the gateway are back, every transaction acknowledged before and
after is committed exactly once on the one unbroken chain. A backup taken under load is one
unbroken chain. And the caveat: a backup restored after
the executors went further commits nothing new, and no executor goes back."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fault_support import Load, _Executors, agreeing_roots, read_log, verify_exactly_once, wait_single_active

from conclavium import streams
from conclavium.chain import Tip, next_block
from conclavium.local.network import start_network
from conclavium.runtime import connect_nats

CHUNK = 128 * 1024


async def backup(nc: Any, stream: str, timeout: float = 60.0) -> tuple[dict[str, Any], bytes]:
    """`$JS.API.STREAM.SNAPSHOT`: the stream's configuration and state, and its snapshot bytes
    (chunks sent to an inbox, each acknowledged for flow control, an empty one with status 204 at
    the end)."""
    inbox = nc.new_inbox()
    chunks: list[bytes] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_chunk(msg: Any) -> None:
        status = (msg.headers or {}).get("Status")
        if status not in (None, "204"):
            done.set_exception(AssertionError(f"snapshot of {stream} failed: {msg.headers}"))
        elif not msg.data:  # the end: empty, status 204
            done.set_result(None)
        else:
            chunks.append(msg.data)
        if msg.reply:
            await nc.publish(msg.reply, b"")

    sub = await nc.subscribe(inbox, cb=on_chunk)
    try:
        req = {"deliver_subject": inbox, "chunk_size": CHUNK}
        answer = json.loads((await nc.request(f"$JS.API.STREAM.SNAPSHOT.{stream}", json.dumps(req).encode())).data)
        assert "error" not in answer, answer
        await asyncio.wait_for(done, timeout)
    finally:
        await sub.unsubscribe()
    return answer, b"".join(chunks)


async def restore(nc: Any, stream: str, meta: dict[str, Any], data: bytes) -> dict[str, Any]:
    """`$JS.API.STREAM.RESTORE`: send the snapshot in chunks, each acknowledged, then an empty
    message; the answer is the restored stream's info."""
    req = {"config": meta["config"], "state": meta["state"]}
    answer = json.loads((await nc.request(f"$JS.API.STREAM.RESTORE.{stream}", json.dumps(req).encode())).data)
    assert "error" not in answer, answer
    for i in range(0, len(data), CHUNK):
        await nc.request(answer["deliver_subject"], data[i : i + CHUNK], timeout=10)
    final = json.loads((await nc.request(answer["deliver_subject"], b"", timeout=60)).data)
    assert "error" not in final, final
    return dict(final)


async def test_streams_backed_up_deleted_and_restored(tmp_path: Path) -> None:
    """Budget: about 1 minute."""
    net = await asyncio.to_thread(start_network, tmp_path, redis=True)
    nc = await connect_nats(net.nats_url, "backup-test")
    ledger = net.opt.ledger
    names = [streams.ledger_stream(ledger), streams.intake_stream(ledger)]
    try:
        first = Load(net, total=1500, workers=16)
        await first.run()
        await verify_exactly_once(net, first.acked)
        quiet = ["gateway", *(n for n in net.procs if n.startswith("sequencer-"))]
        for name in quiet:
            await asyncio.to_thread(net.procs[name].stop)
        js = nc.jetstream(timeout=10)
        before = {n: (await js.stream_info(n)).state for n in names}
        t0 = time.monotonic()
        backups = {n: await backup(nc, n) for n in names}
        backup_s = time.monotonic() - t0

        for n in names:
            assert await js.delete_stream(n)
        t0 = time.monotonic()
        for n in names:
            await restore(nc, n, *backups[n])
        restore_s = time.monotonic() - t0
        after = {n: (await js.stream_info(n)).state for n in names}
        for n in names:
            assert (after[n].messages, after[n].first_seq, after[n].last_seq) == (
                before[n].messages,
                before[n].first_seq,
                before[n].last_seq,
            ), (n, before[n], after[n])

        for name in quiet:
            await asyncio.to_thread(net.procs[name].start)
        for name in quiet:
            await asyncio.to_thread(net.procs[name].wait_ready)
        await wait_single_active(net)
        second = Load(net, total=1000, workers=16, tag="after-restore")
        await second.run()
        report = await verify_exactly_once(net, {**first.acked, **second.acked}, strict_blocks=False)
        size = sum(len(d) for _, d in backups.values())
        print(
            f"\nledger and intake streams ({before[names[0]].messages} blocks) backed up in {backup_s:.2f}s "
            f"({size} bytes), deleted, restored in {restore_s:.2f}s\n{report.summary()}"
        )
    finally:
        await nc.close()
        await asyncio.to_thread(net.stop)


async def test_a_restored_stream_shorter_than_the_executors_commits_nothing_new(tmp_path: Path) -> None:
    """Budget: about 1.5 minutes. The caveat of docs/operations.md: a backup restored after the
    executors executed more blocks leaves them ahead of the stream. The sequencer then appends other
    blocks at heights the executors already hold; they do not take them: no executor goes back or
    changes its root, and nothing submitted after the restore is committed."""
    net = await asyncio.to_thread(start_network, tmp_path, redis=True)
    nc = await connect_nats(net.nats_url, "backup-test")
    ledger = net.opt.ledger
    names = [streams.ledger_stream(ledger), streams.intake_stream(ledger)]
    quiet = ["gateway", *(n for n in net.procs if n.startswith("sequencer-"))]
    executors = _Executors(nc, ledger, sorted(n for n in net.procs if n.startswith("executor-")))
    try:
        first = Load(net, total=800, workers=16)
        await first.run()
        for name in quiet:
            await asyncio.to_thread(net.procs[name].stop)
        backups = {n: await backup(nc, n) for n in names}
        for name in quiet:
            await asyncio.to_thread(net.procs[name].start)
        for name in quiet:
            await asyncio.to_thread(net.procs[name].wait_ready)
        second = Load(net, total=800, workers=16, tag="after-backup")
        await second.run()
        await verify_exactly_once(net, {**first.acked, **second.acked})
        for name in quiet:
            await asyncio.to_thread(net.procs[name].stop)  # the last blocks (signatures) go in now
        await asyncio.sleep(2)
        ahead = await agreeing_roots(executors)
        js = nc.jetstream(timeout=10)
        for n in names:
            assert await js.delete_stream(n)
            await restore(nc, n, *backups[n])
        restored_last = (await js.stream_info(names[0])).state.last_seq
        for name in quiet:
            await asyncio.to_thread(net.procs[name].start)
        for name in quiet:
            await asyncio.to_thread(net.procs[name].wait_ready)
        third = Load(net, total=300, workers=8, tag="after-restore")
        await third.run()
        await asyncio.sleep(10)  # time enough to commit them, were they taken
        appended = (await js.stream_info(names[0])).state.last_seq - restored_last
        assert appended > 0, "the sequencer appended nothing to the restored stream"
        for name in executors.names:
            st = await executors.ask(name, {"type": "node_status"})
            assert (st.get("committed_height"), st.get("root")) == (ahead["committed_height"], ahead["root"]), (
                name,
                st,
            )
            answers = await executors.statuses(name, sorted(third.acked))
            committed = [h for h, a in answers.items() if a.get("status") == "Committed"]
            assert not committed, f"{name} committed {len(committed)} transactions on the restored, shorter stream"
        print(
            f"\nstream restored {second.total} transactions short of the executors (at height "
            f"{ahead['committed_height']}): {len(third.acked)} new transactions acknowledged in {appended} blocks "
            "the sequencer appended, none committed, no executor moved"
        )
    finally:
        await nc.close()
        await asyncio.to_thread(net.stop)


async def test_an_online_backup_under_load_is_an_unbroken_chain(tmp_path: Path, nats_url: str) -> None:
    """Budget: about 45 s. The ledger stream backed up while the load keeps it growing, restored
    into another NATS server: it holds exactly the messages its snapshot state names, and they are
    one unbroken chain from genesis (a point-in-time copy, not a torn one)."""
    net = await asyncio.to_thread(start_network, tmp_path, redis=True)
    nc = await connect_nats(net.nats_url, "backup-test")
    other = await connect_nats(nats_url, "restore-test")
    ledger = net.opt.ledger
    try:
        load = Load(net, total=3000, workers=16)
        task = asyncio.create_task(load.run())
        await load.wait_acked(1000)
        meta, data = await backup(nc, streams.ledger_stream(ledger))
        at_backup = len(load.acked)
        await task
        restored = await restore(other, streams.ledger_stream(ledger), meta, data)
        raw = await read_log(other, ledger)
        assert len(raw) == meta["state"]["messages"] == restored["state"]["messages"], (len(raw), meta["state"])
        tip = Tip()
        for seq, block_bytes in enumerate(raw, start=1):
            block, bhash = next_block(tip, block_bytes, ledger)
            tip = Tip(block.height, bhash, seq, block.ts_ms)
        live = (await nc.jetstream(timeout=10).stream_info(streams.ledger_stream(ledger))).state.last_seq
        assert live > len(raw), "the load went on after the backup"
        await verify_exactly_once(net, load.acked)
        print(
            f"\nonline backup with {at_backup} of {load.total} transactions acknowledged: {len(raw)} blocks, one chain "
            f"to height {tip.height}; the live stream went on to {live}"
        )
    finally:
        await other.close()
        await nc.close()
        await asyncio.to_thread(net.stop)
