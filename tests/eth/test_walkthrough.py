"""docs/ethereum.md's walk-through, run exactly as written: its first shell line starts the
network (here in the background), the rest of the shell block runs in bash, then the Python block;
then the README's Ethereum snippet against the same network.

Marker `protocol` (about 40 s)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from eth_tools import need_tools
from local_up import local_up

pytestmark = pytest.mark.protocol
DOC = Path(__file__).resolve().parents[2] / "docs" / "ethereum.md"


README = DOC.parents[1] / "README.md"


def _blocks(kind: str, doc: Path = DOC, section: str = "## Walk-through") -> list[str]:
    walkthrough = doc.read_text().split(section, 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{kind}\n(.*?)```", walkthrough, re.S)


def test_the_ethereum_walkthrough(tmp_path: Path) -> None:
    modules = need_tools()
    (shell,) = _blocks("sh")
    (python,) = _blocks("python")
    first, rest = shell.split("\n", 1)
    up = first.split("#")[0].split()
    assert up[:2] == ["conclavium", "local"]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), str(modules / ".bin"), os.environ["PATH"]])}
    with local_up(tmp_path, up, env=env, ready_s=120) as proc:
        printed = (tmp_path / "up.log").read_text()
        assert "Ethereum JSON-RPC: http://" in printed and "(4) 0x" in printed
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", rest], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "1337" and lines[1] == str(10**18)
        assert json.loads(lines[2])["valid"] is True
        assert json.loads((tmp_path / "sent.json").read_text())["status"] == "0x1"
        run = subprocess.run(
            [sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == "1 True"
        (readme,) = _blocks("python", README, "## Ethereum")
        run = subprocess.run(
            [sys.executable, "-c", readme], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.strip() == f"1337 {10_000 * 10**18}"
    assert proc.returncode == 0
