"""Smoke test of bench/recovery.py: it runs end to end on a small ledger and reports every figure
docs/performance.md quotes. Not a timed test: nothing here asserts speed. Marker `slow` (about 40 s
alone: a network, a fill, a replay and a recovery)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_recovery_bench_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "recovery.json"
    cmd = [sys.executable, str(ROOT / "bench" / "recovery.py"), "--count", "400", "--json", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["committed"] == 400
    for field in ("replay_with_secrets_s", "recover_to_waiting_s", "members_cli_s", "secrets_to_ready_s",
                  "recovery_total_s"):
        assert r[field] >= 0, field
    assert any("reconstructed the ledger secrets" in line for line in r["recovery_log"])
