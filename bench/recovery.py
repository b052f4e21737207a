"""Disaster recovery time for a ledger of N transactions, beside the raw replay time of the same run.

    python bench/recovery.py [--count 100000] [--private-ratio 0.5] [--json FILE]

Starts a local network (two executors, alice's and bob's, of three members: a commit needs nodes of
k = 2 members; recovery threshold 2; no snapshots so that both measurements replay every chunk),
fills it with `--count` signed transactions through the gateway (bench/run.py's load generator;
half sealed by default), then measures, with real processes:

1. anchor: alice's executor stopped and started again with its sealed secrets: start to ready
   (replays every block from its chunks, executing and opening sealed transactions);
2. recovery: both executors stopped and every secret of alice's wiped; a new executor with
   `--recover` on a copy of her chunks: start to "waiting for recovery shares" (public prefix
   replayed, the rest scanned), the members' `conclavium gov recovery-share` (two CLI runs; the
   second returns once the node took its share), then alice endorses the recovered node
   (docs/recovery.md step 5), and from the reconstruction (the executor's log) to the node having
   replayed the whole history with the secrets: `/readyz` says `quorum_unreachable`, the one thing
   left being another member's node (step 6, not timed here). `recovery_total_s` is start to that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import run as load  # noqa: E402

from conclavium.attestation.providers import VIRTUAL_SEALING_KEY_FILE  # noqa: E402
from conclavium.local.network import LocalNetwork, NetworkOptions  # noqa: E402
from conclavium.local.processes import Process, free_port, service_command  # noqa: E402


def _readyz(port: int) -> tuple[int, str]:
    try:
        with urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status, json.loads(r.read()).get("reason", "")
    except Exception as e:
        body = getattr(e, "read", lambda: b"{}")()
        try:
            return getattr(e, "code", 0), json.loads(body or b"{}").get("reason", "")
        except ValueError:
            return 0, ""


def _until(check: Any, what: str, timeout: float) -> float:
    t0 = time.perf_counter()
    while not check():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError(f"{what} after {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - t0


def _executor(net: LocalNetwork, name: str, data_dir: Path, *extra: str) -> Process:
    port = free_port()
    argv = service_command("conclavium-executor", "services.executor.main")
    argv += ["--ledger", net.opt.ledger, "--nats-url", net.nats_url, "--name", name, "--data-dir", str(data_dir)]
    argv += ["--http-port", str(port), "--snapshot-every", str(10**12), "--log-level", "info", *extra]
    return Process(name, argv, net.dir / "logs" / f"{name}.log", port=port)


def _replayed(port: int) -> bool:
    """Replayed with the secrets and endorsed: ready, or waiting only for another member's node."""
    code, reason = _readyz(port)
    return code == 200 or reason.startswith("quorum_unreachable")


def _endorse(net: LocalNetwork, member: str, name: str) -> bool:
    """docs/recovery.md step 5: the member takes its node's signing key from `GET $GW/v1/service`
    and runs `conclavium --net DIR --as MEMBER consortium endorse-node NAME.pem`; False while the
    node is not listed as Trusted yet or the CLI fails."""
    try:
        with urlopen(f"{net.gateway_url}/v1/service", timeout=5) as r:
            service = json.loads(r.read())
    except Exception:
        return False
    node = next((n for n in service.get("nodes", []) if n.get("name") == name and n.get("status") == "Trusted"), None)
    if node is None:
        return False
    pem = net.dir / f"{name}.pem"
    pem.write_text(node["signing_key"])
    cli = [*service_command("conclavium", "conclavium.cli.main"), "--net", str(net.dir), "--as", member]
    out = subprocess.run([*cli, "consortium", "endorse-node", str(pem)], capture_output=True, text=True, timeout=120)
    return out.returncode == 0


def _fill(net: LocalNetwork, count: int, private_ratio: float) -> dict[str, Any]:
    """`count` transactions through bench/run.py's load generator, in rounds that fit the validity window."""
    done = {"committed": 0}
    target = load.attach_network(net.dir)
    left = count
    while left > 0:
        n = min(left, 20_000)
        args = load.parse_args(["--net", str(net.dir), "--count", str(n), "--private-ratio", str(private_ratio)])
        r = load.run_once(target, args, None, None)
        done["committed"] += r["committed"]
        left -= n
    return done


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--private-ratio", type=float, default=0.5)
    p.add_argument("--json", type=Path)
    p.add_argument("--keep", action="store_true", help="leave the network's directory on disk")
    a = p.parse_args(argv)
    d = Path(tempfile.mkdtemp(prefix="conclavium-recovery-bench-"))
    opts = NetworkOptions(executors=2, members=3, users=5, snapshot_every=10**12, log_level="warning")
    net = LocalNetwork(d, opts)
    extra: list[Process] = []
    result: dict[str, Any] = {"count": a.count, "private_ratio": a.private_ratio, "load_avg_before": os.getloadavg()}
    try:
        net.start(timeout=120)
        filled = _fill(net, a.count, a.private_ratio)
        result["committed"] = filled["committed"]
        ex = net.procs["executor-0"]
        old_dir = d / "nodes" / "executor-0"
        time.sleep(2.0)  # the share set and the last signatures reach the ledger
        ex.stop()

        # 1. anchor: the same executor, secrets in hand, replays its chunks.
        anchor = _executor(net, "executor-0", old_dir)
        extra.append(anchor)
        anchor.start()
        result["replay_with_secrets_s"] = round(
            _until(lambda: _readyz(anchor.port or 0)[0] == 200, "anchor ready", 3600), 2
        )
        anchor.kill()

        # 2. recovery: every executor gone, alice's secrets wiped, a new executor on a copy of her chunks.
        net.procs["executor-1"].stop()
        for f in ("node_keys.sealed", "ledger_secrets.sealed", VIRTUAL_SEALING_KEY_FILE):
            (old_dir / f).unlink(missing_ok=True)
        new_dir = d / "nodes" / "recovery-0"
        shutil.copytree(old_dir / "ledger", new_dir / "ledger")
        rec = _executor(net, "recovery-0", new_dir, "--recover")
        extra.append(rec)
        started = time.time()
        rec.start()
        result["recover_to_waiting_s"] = round(
            _until(lambda: "waiting for recovery shares" in _readyz(rec.port or 0)[1], "waiting for shares", 3600), 2
        )
        cli = service_command("conclavium", "conclavium.cli.main")
        t0 = time.perf_counter()
        for member in ("alice", "bob"):
            out = subprocess.run(
                [*cli, "--net", str(d), "--as", member, "gov", "recovery-share"], capture_output=True, text=True
            )
            if out.returncode != 0:
                raise RuntimeError(f"{member}'s recovery-share failed: {out.stdout}{out.stderr}")
        result["members_cli_s"] = round(time.perf_counter() - t0, 2)
        _until(lambda: _endorse(net, "alice", "recovery-0"), "alice's endorsement of the recovered node", 120)
        _until(lambda: _replayed(rec.port or 0), "recovered executor replayed", 3600)
        ready_at = time.time()
        log = [json.loads(line) for line in (d / "logs" / "recovery-0.log").read_text().splitlines() if line]
        rebuilt = next(e for e in log if e["msg"].startswith("reconstructed the ledger secrets"))
        result["secrets_to_ready_s"] = round(ready_at - rebuilt["ts"], 2)
        result["recovery_total_s"] = round(ready_at - started, 2)
        result["recovery_log"] = [e["msg"] for e in log if "recover" in e["msg"] or e is rebuilt]
    finally:
        for proc in extra:
            proc.stop()
        net.stop()
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)
    print(json.dumps(result, indent=2))
    if a.json:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
