"""Smoke test of `bench/run.py --protocol notary`: requests with 2 inputs and their tear-off go
through POST /v1/notary/requests, every one is notarised (none Invalid), and the key-value anchor
is measured on the same network. Not a timed test: nothing here asserts speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_notary_notarises_everything_and_measures_the_anchor(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--executors", "1", "--protocol", "notary"]
    cmd += ["--count", "300", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["acknowledged"] == 300 and r["committed"] == 300 and r["failed"] == 0 and not r["invalid"]
    assert r["anchor"]["committed"] == r["anchor"]["acknowledged"] == 300
    assert r["committed_tps"] > 0 and r["anchor"]["committed_tps"] > 0
    assert "anchor (public key-value writes" in proc.stdout
