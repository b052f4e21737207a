"""A register workload through the real gateway with the SDK, recorded as a history (`history.py`)
and checked against what the executors committed, while a fault test injects its fault.

    regs = Registers(net)
    task = asyncio.create_task(regs.run())
    ...inject the fault...
    regs.stop(); await task
    await regs.check(tmp_path)      # AssertionError naming the anomalies and the saved history

Each process is one SDK client pinned to the consortium identity (commits are reported only with a
verified receipt, reads only with a verified signed answer) that, one operation at a time, writes a
fresh value to one of a few registers (a put of a public map, resent with the same bytes while the
gateway answers 503 or does not answer, then followed to Committed) or reads one.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
from fault_support import RETRY_STATUSES, _Executors
from history import FAIL, INFO, OK, READ, WRITE, Commit, History, check, operations, save

from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from conclavium.runtime import connect_nats
from conclavium.sdk.client import Client, ClientError


class Registers:
    def __init__(
        self,
        net: LocalNetwork,
        *,
        processes: int = 4,
        keys: int = 3,
        map_name: str = "public:registers",
        commit_timeout_s: float = 30.0,
        seed: int = 20,
    ) -> None:
        self.net = net
        self.processes = processes
        self.keys = [f"r{i}" for i in range(keys)]
        self.map_name = map_name
        self.commit_timeout_s = commit_timeout_s
        self.rng = random.Random(seed)
        self.history = History()
        self.writes: dict[str, tuple[str, int]] = {}  # tx hash -> (key, value), every write invoked
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    async def run(self) -> None:
        identity = (self.net.dir / "consortium.json").read_text()
        keys = [PrivateKey.from_file(str(self.net.dir / u["key"])) for u in self.net.users]
        clients = [
            Client(self.net.gateway_url, keys[p % len(keys)], ledger=self.net.opt.ledger, consortium=identity)
            for p in range(self.processes)
        ]
        try:
            await asyncio.gather(*(self._process(p, c) for p, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.close()

    async def _process(self, p: int, client: Client) -> None:
        n = 0
        while not self._stopping:
            key = self.rng.choice(self.keys)
            if self.rng.random() < 0.5:
                n += 1
                await self._write(p, client, key, p * 1_000_000 + n)
            else:
                await self._read(p, client, key)

    async def _write(self, p: int, client: Client, key: str, value: int) -> None:
        tx = await client.build([{"op": "put", "map": self.map_name, "key": key, "value": value}])
        h = tx.hash.hex()
        self.writes[h] = (key, value)
        self.history.invoke(p, WRITE, key, value, tx=h)
        deadline = time.monotonic() + self.commit_timeout_s
        ambiguous = False  # an attempt that may have reached the gateway: a refusal after it is not definite
        while True:
            try:
                await client.submit(tx)
                break
            except ClientError as e:
                if e.status not in RETRY_STATUSES:
                    self.history.complete(
                        p, INFO if ambiguous else FAIL, WRITE, key, value, error=f"{e.status} {e.code}"
                    )
                    return
                ambiguous = ambiguous or e.status != 503
            except (aiohttp.ClientError, TimeoutError):
                ambiguous = True
            if time.monotonic() > deadline:
                self.history.complete(p, INFO, WRITE, key, value, error="not accepted in time")
                return
            await asyncio.sleep(0.1)
        try:
            st = await client.wait(h, timeout=max(1.0, deadline - time.monotonic()))
        except (ClientError, aiohttp.ClientError, TimeoutError) as e:
            self.history.complete(p, INFO, WRITE, key, value, error=f"{type(e).__name__}: {e}")
            return
        if st["status"] == "Committed":
            self.history.complete(p, OK, WRITE, key, value, height=int(st["height"]))
        else:
            self.history.complete(p, FAIL, WRITE, key, value, error=str(st.get("reason")))

    async def _read(self, p: int, client: Client, key: str) -> None:
        self.history.invoke(p, READ, key)
        try:
            value = await client.get(self.map_name, key)
        except ClientError as e:
            if e.code != "not_found" or client.last_read is None:
                self.history.complete(p, FAIL, READ, key, error=f"{e.status} {e.code}")
                await asyncio.sleep(0.1)
                return
            value = None
        except (aiohttp.ClientError, TimeoutError) as e:
            self.history.complete(p, FAIL, READ, key, error=type(e).__name__)
            await asyncio.sleep(0.1)
            return
        assert client.last_read is not None
        self.history.complete(p, OK, READ, key, value, height=client.last_read.height)

    def outcomes(self) -> dict[str, int]:
        """How many operations ended ok, fail and info, per function: for the test's report."""
        counts: dict[str, int] = {}
        for e in self.history.events:
            if e.type != "invoke":
                counts[f"{e.f} {e.type}"] = counts.get(f"{e.f} {e.type}", 0) + 1
        return dict(sorted(counts.items()))

    def acked(self) -> tuple[list[str], set[str]]:
        """The writes the gateway acknowledged as committed, and those whose outcome is unknown
        (for `verify_exactly_once` and its `maybe`)."""
        writes = [o for o in operations(self.history.events) if o.f == WRITE and o.tx]
        return [o.tx for o in writes if o.outcome == OK and o.tx], {o.tx for o in writes if o.outcome == INFO and o.tx}

    async def commits(self) -> list[Commit]:
        """Every write of the workload the first executor holds Committed, with its position."""
        names = sorted(n for n in self.net.procs if n.startswith("executor-"))
        nc = await connect_nats(self.net.nats_url, "history-check")
        try:
            ex = _Executors(nc, self.net.opt.ledger, names)
            answers = await ex.statuses(names[0], sorted(self.writes))
        finally:
            await nc.close()
        return [
            Commit(h, *self.writes[h], int(a["height"]), int(a["index"]))
            for h, a in answers.items()
            if a.get("status") == "Committed"
        ]

    async def check(self, artefacts: Path) -> int:
        """Check the history against the ledger; on an anomaly save both as JSON under `artefacts`
        and fail naming the file. Returns how many operations were checked."""
        commits = await self.commits()
        path = artefacts / "history.json"
        save(path, self.history.events, commits)
        anomalies = check(self.history.events, commits)
        assert not anomalies, f"{len(anomalies)} anomalies, history kept in {path}:\n" + "\n".join(
            str(a) for a in anomalies[:20]
        )
        return sum(1 for e in self.history.events if e.type == "invoke")
