"""Read benchmark: public reads (`GET /v1/state/...`) through gateway and executor, as the SDK does them.

    python bench/reads.py [--net DIR] [--executors N] [--duration S] [--clients C] [--keys K] [--json FILE]

Writes `--keys` entries, then `--clients` concurrent SDK clients read random ones among them for
`--duration` seconds; prints reads/s, p50/p95/p99 latency and the CPU time each service spent
per read (from /proc: on a shared machine a steadier figure than the rate), the benchmark's own
process (`client`: the SDK clients, verifying) included. With the service certificate pinned
(always, here) the SDK checks every answer's signature and endorsement, so the figures include
the client's verification as well as the executor's signing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conclavium.crypto.keys import PrivateKey  # noqa: E402
from conclavium.local.network import LocalNetwork, NetworkOptions  # noqa: E402
from conclavium.sdk.client import Client  # noqa: E402

MAP = "public:bench-reads"
CLK_TCK = os.sysconf("SC_CLK_TCK")
WATCHED = ("gateway", "executor-0")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def _pct(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 2) if values else 0.0


async def run(
    gateway: str, key_file: str, trust: dict[str, str], args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    """`trust`: the service certificate and consortium identity the clients verify against."""
    key = PrivateKey.from_file(key_file)
    async with Client(gateway, key, **trust) as writer:
        hashes = [await writer.put(MAP, f"k{i}", {"i": i, "pad": "x" * 100}) for i in range(args.keys)]
        await writer.wait(hashes[-1], timeout=60)
    latencies: list[float] = []
    stop_at = time.perf_counter() + args.warmup + args.duration
    measure_from = time.perf_counter() + args.warmup

    async def reader() -> None:
        async with Client(gateway, None, **trust) as c:
            while True:
                t0 = time.perf_counter()
                if t0 > stop_at:
                    return
                await c.get(MAP, f"k{random.randrange(args.keys)}")
                if t0 >= measure_from:
                    latencies.append(time.perf_counter() - t0)

    async def sample_cpu() -> dict[str, float]:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    pids = {**pids, "client": os.getpid()}
    cpu0, *_ = await asyncio.gather(sample_cpu(), *(reader() for _ in range(args.clients)))
    cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    latencies.sort()
    return {
        "cpu_us_per_read": {name: round(s / max(1, len(latencies)) * 1e6, 1) for name, s in cpu.items()},
        "reads_per_s": round(len(latencies) / args.duration, 1),
        "reads": len(latencies),
        "latency_ms": {"p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95), "p99": _pct(latencies, 0.99)},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", type=Path, help="a running network (DIR/local.json) instead of starting one")
    p.add_argument("--executors", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    net = None
    if args.net:
        doc = json.loads((args.net / "local.json").read_text())
        gateway, directory = doc["gateway_url"], args.net
        pids = {p["name"]: p["pid"] for p in doc["processes"] if p.get("pid") and p["name"] in WATCHED}
        key_file = str(directory / (doc["users"] or doc["members"])[0]["key"])
        trust = {
            "service_cert": (directory / doc["service_cert"]).read_text(),
            "consortium": (directory / doc["consortium"]).read_text(),
        }
    else:
        net = LocalNetwork(
            Path(tempfile.mkdtemp(prefix="conclavium-reads-")),
            NetworkOptions(executors=args.executors, users=1, log_level="warning"),
        )
        try:
            net.start(timeout=120)
        except BaseException:
            net.stop()
            raise
        gateway, key_file = net.gateway_url, str(net.dir / net.users[0]["key"])
        trust = net.trust()
        pids = {name: p.pid for name, p in net.procs.items() if p.pid and name in WATCHED}
    try:
        result = asyncio.run(run(gateway, key_file, trust, args, pids))
    finally:
        if net is not None:
            net.stop()
            shutil.rmtree(net.dir, ignore_errors=True)
    result["config"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
