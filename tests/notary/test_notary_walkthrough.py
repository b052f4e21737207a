"""docs/notary.md's walk-through, run literally: its shell block, as it stands, with bash, against
`conclavium local up` started as a user would, then what it printed is checked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_up import local_up as local_up_in

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def walkthrough_block() -> str:
    text = (ROOT / "docs" / "notary.md").read_text()
    section = text.split("## Walk-through", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def local_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("notary-walkthrough")
    with local_up_in(work, [str(BIN / "conclavium"), "local", "up", "--dir", "net"]):
        yield work


def test_the_walkthrough_as_written(local_up: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough_block()],
        cwd=local_up,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    states = [line.get("state") for line in lines if "state" in line and "consumed" not in line]
    assert states[-2:] == ["Open", "Accepted"]
    notarised = [line for line in lines if line.get("status") == "Notarised"]
    assert len(notarised) == 2 and all(n["verified"] for n in notarised)
    pay_id = p.stdout.strip().splitlines()[-1].removeprefix("paid in ")
    assert notarised[1]["tx_id"] == pay_id
    (refused,) = [line for line in lines if line.get("status") == "Refused"]
    assert refused["reason"] == "conflict" and "refused: exit 1" in p.stdout
    (consumed_state,) = refused["error"]["consumed_states"]
    detail = refused["error"]["consumed_states"][consumed_state]
    assert detail["type"] == "INPUT_STATE"
    mine, theirs = [line for line in lines if "consumed" in line]
    assert mine["tx_id"] == pay_id and "tx_id" not in theirs
    assert theirs["hash_of_transaction_id"] == detail["hash_of_transaction_id"]
    (verified,) = [line for line in lines if "valid" in line]
    assert verified["valid"] is True and verified["tx_id"] == pay_id
