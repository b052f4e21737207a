"""Smoke test of `bench/run.py --protocol sawtooth`: intkey batches go through POST /batches, the
intkey TP (Sawtooth SDK, Python 3.9) runs every one, none Invalid, and the TP's CPU is reported
beside the executor's. Not a timed test: nothing here asserts speed. Marked `protocol`; ~40 s."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conclavium.local.sawtooth import sdk_python

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.protocol


def test_bench_sawtooth_commits_every_batch(tmp_path: Path) -> None:
    try:
        sdk_python()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(ROOT / "bench" / "run.py"), "--executors", "1", "--protocol", "sawtooth"]
    cmd += ["--count", "200", "--batch", "20", "--clients", "4", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["acknowledged"] == 200 and r["committed"] == 200 and r["failed"] == 0 and not r["invalid"]
    assert "sawtooth-intkey-0" in proc.stdout
