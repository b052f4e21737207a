"""Smoke test of the benchmark: it runs end to end against a network it starts itself and writes
every figure the README's performance table quotes. Not a timed test: nothing here asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_all_figures(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--executors", "1", "--count", "300", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    for field in ("committed_tps", "latency_ms", "acknowledged", "committed", "failed", "cpu_us_per_tx", "rss_mb",
                  "ceiling", "fraction_of_ceiling", "machine", "config"):
        assert field in r, field
    assert set(r["latency_ms"]) >= {"p50", "p95", "p99", "max"}
    assert r["acknowledged"] == 300
    assert r["committed"] == r["acknowledged"]
    assert r["failed"] == 0 and not r["invalid"]
    assert r["committed_tps"] > 0
    assert {"gateway", "sequencer-0", "executor-0", "nats"} <= set(r["cpu_us_per_tx"])
    assert r["rss_mb"]["executor-0"]["rss"] > 0
    assert r["ceiling"]["ceiling_tps"] > 0 and r["ceiling"]["ed25519_verify_us"] > 0
