"""The CLI session of the README, run as a user would: `conclavium local up` in the background,
then `conclavium ...` commands against it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from local_up import local_up as local_up_in

CLI = [str(Path(sys.executable).parent / "conclavium")]


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(CLI + list(args), cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}: {p.stderr}{p.stdout}")
    return p


@pytest.fixture(scope="module")
def local_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("cli")
    with local_up_in(work, [*CLI, "local", "up", "--dir", "net"]) as proc:
        yield work
    assert proc.returncode == 0
    for p in json.loads((work / "net" / "local.json").read_text())["processes"]:
        with pytest.raises(ProcessLookupError):
            os.kill(p["pid"], 0)


def test_readme_session(local_up: Path) -> None:
    w = local_up
    net = json.loads((w / "net" / "local.json").read_text())
    assert {"gateway_url", "nats_url", "service_cert", "members", "users", "processes"} <= net.keys()
    assert len(net["members"]) == 3 and len(net["users"]) == 2
    h = run("--net", "net", "tx", "put", "public:greetings", "hello", '"world"', cwd=w).stdout.splitlines()[-1]
    hp = run("--net", "net", "tx", "put", "secrets", "hello", '"private"', cwd=w).stdout.splitlines()[-1]
    st = json.loads(run("--net", "net", "tx", "status", h, "--wait", cwd=w).stdout)
    assert st["status"] == "Committed"
    assert json.loads(run("--net", "net", "tx", "status", hp, "--wait", cwd=w).stdout)["status"] == "Committed"
    assert json.loads(run("--net", "net", "tx", "get", "public:greetings", "hello", cwd=w).stdout) == "world"
    assert json.loads(run("--net", "net", "tx", "get", "secrets", "hello", cwd=w).stdout) == "private"
    denied = run("--net", "net", "--as", "user1", "tx", "get", "secrets", "hello", cwd=w, check=False)
    assert denied.returncode == 1 and "not_found" in denied.stderr
    (w / "r.json").write_text(run("--net", "net", "receipt", "get", h, cwd=w).stdout)
    ok = run("receipt", "verify", "r.json", "--consortium", "net/consortium.json", cwd=w)
    assert json.loads(ok.stdout)["valid"] is True
    r = json.loads((w / "r.json").read_text())
    r["root"] = "00" * 32
    (w / "bad.json").write_text(json.dumps(r))
    bad = run("receipt", "verify", "bad.json", "--consortium", "net/consortium.json", cwd=w, check=False)
    assert bad.returncode == 1 and json.loads(bad.stdout)["code"] == "bad_inclusion_proof"
    status = json.loads(run("--net", "net", "local", "status", cwd=w).stdout)
    assert len(status["executors"]) == 3 and status["sequencers"][0]["active"] is True
    assert all(e["committed_height"] and e["root"] for e in status["executors"])
    bad_value = run("--net", "net", "tx", "put", "public:x", "k", "not-json", cwd=w, check=False)
    assert bad_value.returncode == 2 and "JSON" in bad_value.stderr


def test_keygen(tmp_path: Path) -> None:
    out = json.loads(run("keygen", "--out", "alice", cwd=tmp_path).stdout)
    assert (tmp_path / "alice.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "alice.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert len(out["key_id"]) == 64
    run("keygen", "--out", "p256", "--alg", "ES256", cwd=tmp_path)


def test_supervisor_restarts_a_dead_process(local_up: Path) -> None:
    w = local_up
    before = {p["name"]: p["pid"] for p in json.loads((w / "net" / "local.json").read_text())["processes"]}
    os.kill(before["executor-2"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = {p["name"]: p["pid"] for p in json.loads((w / "net" / "local.json").read_text())["processes"]}
        if now["executor-2"] != before["executor-2"]:
            break
        time.sleep(0.2)
    assert now["executor-2"] != before["executor-2"]
    h = run("--net", "net", "tx", "put", "public:greetings", "after", '"restart"', cwd=w).stdout.splitlines()[-1]
    assert json.loads(run("--net", "net", "tx", "status", h, "--wait", cwd=w).stdout)["status"] == "Committed"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = json.loads(run("--net", "net", "local", "status", cwd=w).stdout)["executors"]
        if len({e["committed_height"] for e in st}) == 1 and len({e["root"] for e in st}) == 1:
            break
        time.sleep(0.3)
    assert len({e["root"] for e in st}) == 1, st


def test_readme_governance_walkthrough(local_up: Path) -> None:
    w = local_up
    run("keygen", "--out", "dave", cwd=w)
    run("keygen", "--out", "erin", cwd=w)
    run("consortium", "next", "net/consortium.json", "--add", "dave=dave.pub.pem", "--out", "v2.json", cwd=w)
    unsigned = run("consortium", "verify", "v2.json", "--previous", "net/consortium.json", cwd=w, check=False)
    assert unsigned.returncode == 1 and json.loads(unsigned.stdout)["code"] == "insufficient_signatures"
    run("--net", "net", "--as", "alice", "consortium", "sign", "v2.json", cwd=w)
    run("--net", "net", "--as", "bob", "consortium", "sign", "v2.json", cwd=w)
    checked = json.loads(run("consortium", "verify", "v2.json", "--previous", "net/consortium.json", cwd=w).stdout)
    assert checked["valid"] and checked["version"] == 2 and "dave" in checked["members"].values()
    (w / "add-dave-and-erin.json").write_text(
        json.dumps(
            {
                "actions": [
                    {"name": "set_consortium_identity", "args": {"identity": "@v2.json"}},
                    {"name": "set_user", "args": {"name": "erin", "public_key": "@erin.pub.pem"}},
                ]
            }
        )
    )
    pid = run("--net", "net", "gov", "propose", "add-dave-and-erin.json", cwd=w).stdout.splitlines()[-1]
    assert (
        json.loads(run("--net", "net", "--as", "alice", "gov", "vote", pid, "--approve", cwd=w).stdout)["state"]
        == "Open"
    )
    voted = json.loads(run("--net", "net", "--as", "bob", "gov", "vote", pid, "--approve", cwd=w).stdout)
    assert voted["state"] == "Accepted"
    shown = json.loads(run("--net", "net", "gov", "show", pid, cwd=w).stdout)
    assert shown["state"] == "Accepted" and len(shown["ballots"]) == 2
    h = run("--net", "net", "--key", "erin.key", "tx", "put", "public:greetings", "erin", '"hi"', cwd=w)
    st = json.loads(run("--net", "net", "tx", "status", h.stdout.splitlines()[-1], "--wait", cwd=w).stdout)
    assert st["status"] == "Committed"
    again = run("--net", "net", "--as", "carol", "gov", "vote", pid, "--approve", cwd=w, check=False)
    assert again.returncode == 1 and json.loads(again.stdout)["status"] == "Invalid"
    listed = json.loads(run("--net", "net", "gov", "list", "--state", "Accepted", cwd=w).stdout)
    assert pid in {p["proposal_id"] for p in listed}



DEEP = "[" * 100 + "]" * 100
NOWHERE = ["--gateway", "http://127.0.0.1:9"]
PUT = [*NOWHERE, "--key", "me.key", "tx", "put", "public:x", "k"]


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli-keys")
    run("keygen", "--out", "me", cwd=d)
    (d / "a-file").write_text("")
    return d


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        ([*NOWHERE, "tx", "put", "public:x", "k", "1"], 2, "--key FILE"),
        ([*NOWHERE, "gov", "vote", "ab" * 32, "--approve"], 2, "--key FILE"),
        ([*PUT, "1" + "0" * 23], 2, "int_out_of_range"),
        ([*PUT, "1" + "0" * 5000], 2, "int_out_of_range"),
        ([*PUT, "NaN"], 2, "float_not_finite"),
        ([*PUT, DEEP], 2, "too_deep"),
        ([*PUT, "[" * 5000], 2, "VALUE must be JSON"),
        ([*NOWHERE, "--key", "missing.key", "tx", "put", "public:x", "k", "1"], 2, "cannot read key file missing.key"),
        ([*NOWHERE, "--key", "me.pub.pem", "tx", "put", "public:x", "k", "1"], 2, "not a private key file"),
        ([*PUT, "1"], 1, "Cannot connect"),
        (["--gateway", "not-a-url", "tx", "status", "ab" * 32], 2, "not a gateway URL"),
        (["--net", "nowhere", "tx", "status", "ab" * 32], 2, "nowhere/local.json not found"),
        ([*NOWHERE, "--key", "me.key", "gov", "propose", "missing.json"], 2, "proposal file missing.json"),
        (["receipt", "verify", "missing.json", "--consortium", "missing.json"], 2, "cannot read receipt"),
        (["keygen", "--out", "a-file/k"], 2, "File exists: a-file"),
    ],
)
def test_user_errors_are_one_line_with_a_non_zero_exit(keys_dir: Path, args: list[str], code: int, words: str) -> None:
    p = run(*args, cwd=keys_dir, check=False)
    assert p.returncode == code, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert words in p.stderr, p.stderr


def test_user_errors_against_a_running_ledger(local_up: Path) -> None:
    w = local_up
    gateway = json.loads((w / "net" / "local.json").read_text())["gateway_url"]
    for args, code, words in (
        (["--gateway", gateway, "tx", "put", "public:x", "k", "1"], 2, "--key FILE"),
        (["--net", "net", "tx", "put", "public:x", "k", "100000000000000000000000"], 2, "int_out_of_range"),
        (["--net", "net", "tx", "put", "public:x", "k", DEEP], 2, "too_deep"),
        (["--gateway", gateway, "tx", "status", "not-a-hash"], 1, "invalid_hash"),
    ):
        p = run(*args, cwd=w, check=False)
        assert p.returncode == code, (args, p.returncode, p.stderr)
        assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert words in p.stderr, p.stderr
