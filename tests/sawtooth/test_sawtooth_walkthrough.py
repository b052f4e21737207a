"""docs/sawtooth.md's walk-through, run literally: `conclavium local up --dir net --sawtooth intkey`
started as a user would (three executors, each with the intkey TP on the Sawtooth SDK's processor
runtime), then its shell block as it stands, with bash, from a folder laid out like the checkout;
then what it printed is checked, and every executor has executed the batches without a fork.

Marked `protocol`. Time budget: about 60 s on the shared machine (start-up ~30 s, five commands
waiting for commit).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.request import urlopen

import pytest
from local_up import local_up as local_up_in
from sawtooth_support import need_sdk

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.protocol


def walkthrough() -> tuple[str, str]:
    section = (ROOT / "docs" / "sawtooth.md").read_text().split("## Walk-through", 1)[1]
    up = re.search(r"\n    (conclavium local up [^\n]+)\n", section).group(1)  # type: ignore[union-attr]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]
    return up, block


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    need_sdk()
    work = tmp_path_factory.mktemp("sawtooth-walkthrough")
    for name in (".tools", "examples"):
        (work / name).symlink_to(ROOT / name)
    up, _ = walkthrough()
    argv = up.split()
    with local_up_in(work, [str(BIN / argv[0]), *argv[1:]], ready_s=180):
        yield work


def test_the_walkthrough_as_written(work: Path) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    p = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", walkthrough()[1]],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    statuses = [line["status"] for line in lines if "status" in line]
    assert statuses == ["COMMITTED", "COMMITTED", "INVALID"], p.stdout
    (bad,) = lines[2]["invalid_transactions"]
    assert bad["message"] == "Verb is 'dec', but the result would be below 0"
    assert "refused: exit 1" in p.stdout
    assert lines[3:] == [{"apples": 8}, {"apples": 8}]
    doc = json.loads((work / "net" / "local.json").read_text())
    assert sorted(doc["applications"]["sawtooth"]["tp_endpoints"]) == ["executor-0", "executor-1", "executor-2"]
    for proc in doc["processes"]:
        if proc["name"].startswith("executor-"):
            with urlopen(f"http://{proc['host']}:{proc['port']}/metrics", timeout=5) as r:
                text = r.read().decode()
            assert re.search(r'^conclavium_executor_sawtooth_batches_total\{outcome="executed"\} 2\.0$', text, re.M)
            assert re.search(r"^conclavium_executor_fork_detected 0\.0$", text, re.M)


def _get(url: str, data: bytes | None = None, content_type: str | None = None) -> tuple[int, dict]:
    from urllib.error import HTTPError
    from urllib.request import Request

    req = Request(url, data=data, headers={"Content-Type": content_type} if content_type else {})
    try:
        with urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except HTTPError as e:
        return e.code, json.loads(e.read())


def test_sawtooth_error_bodies_from_the_running_gateway(work: Path) -> None:
    """Each refusal has Sawtooth's status, integer code and title (clients match on the code)."""
    from conclavium.sawtooth.batch import build_batch
    from conclavium.sawtooth.pb.sawtooth_pb2 import BatchList

    url = json.loads((work / "net" / "local.json").read_text())["applications"]["sawtooth"]["rest"]
    good = BatchList(batches=[build_batch(b"\x07" * 32, [("intkey", "1.0", b"\xa0", ["1cf126"], ["1cf126"])])])
    forged = BatchList()
    forged.CopyFrom(good)
    forged.batches[0].header_signature = "00" * 64
    cases = [
        (f"{url}/batches", good.SerializeToString(), "application/json", 400, 42),
        (f"{url}/batches", b"\xff\xff\xff", "application/octet-stream", 400, 35),
        (f"{url}/batches", b"", "application/octet-stream", 400, 34),
        (f"{url}/batches", forged.SerializeToString(), "application/octet-stream", 400, 30),
        (f"{url}/batch_statuses", None, None, 400, 66),
        (f"{url}/batch_statuses?id=xyz", None, None, 400, 60),
        (f"{url}/state/1cf126", None, None, 400, 62),
        (f"{url}/state/{'1cf126' + '00' * 32}", None, None, 404, 75),
        (f"{url}/state?address=XYZ", None, None, 400, 62),
        (f"{url}/state?limit=0", None, None, 400, 53),
        (f"{url}/state?limit=5000", None, None, 400, 54),
        (f"{url}/state?head={'ab' * 32}", None, None, 404, 50),
    ]
    for target, data, ctype, status, code in cases:
        got_status, body = _get(target, data, ctype)
        assert (got_status, body["error"]["code"]) == (status, code), (target, body)
        assert body["error"]["title"] and body["error"]["message"]
    status, body = _get(f"{url}/batches", good.SerializeToString(), "application/octet-stream")
    assert status == 202 and body["link"].startswith(f"{url}/batch_statuses?id=")
    status, body = _get(body["link"] + "&wait=30")
    # well formed and well signed, but an empty intkey payload: the TPs refuse it, with their words
    assert status == 200 and body["data"][0]["status"] == "INVALID"
    assert body["data"][0]["invalid_transactions"][0]["message"].startswith("Verb must be set, inc or dec")
