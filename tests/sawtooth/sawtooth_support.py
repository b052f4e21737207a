"""Helpers of the Sawtooth tests: governance entries enabling the application, intkey batches,
the intkey TP (the Sawtooth SDK's processor runtime on Python 3.9) as a process, and batches
submitted to a local network's REST API and followed to COMMITTED."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import cbor2
import pytest

from conclavium.apps import app_entry
from conclavium.block import Entry, Kind
from conclavium.crypto.keys import PrivateKey
from conclavium.governance import documents
from conclavium.local.network import LocalNetwork
from conclavium.local.sawtooth import sdk_python, tp_command
from conclavium.sawtooth import APP
from conclavium.sawtooth.batch import build_batch
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchList
from services.executor.sawtooth_tp import TpRouter

PREFIX = hashlib.sha512(b"intkey").hexdigest()[:6]
INTKEY = [{"name": "intkey", "version": "1.0"}]


def need_sdk() -> None:
    try:
        sdk_python()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def address(name: str) -> str:
    return PREFIX + hashlib.sha512(name.encode()).hexdigest()[-64:]


def intkey_txn(verb: str, name: str, value: int) -> tuple[str, str, bytes, list[str], list[str]]:
    payload = cbor2.dumps({"Verb": verb, "Name": name, "Value": value})
    return ("intkey", "1.0", payload, [address(name)], [address(name)])


def batch(key: bytes, *txns: tuple[str, str, bytes, list[str], list[str]]) -> Batch:
    return build_batch(key, list(txns))


def entry(b: Batch) -> Entry:
    return app_entry(APP, b.SerializeToString(), b"")


def enable_sawtooth(
    member: PrivateKey, ledger: str, at_s: int, families: list[dict[str, Any]], signers: list[str] | None = None
) -> list[Entry]:
    """Governance entries running the families; any signer (None), or only `signers` (public keys)."""
    actions: list[dict[str, Any]] = [{"name": "set_applications", "args": {"applications": ["kv", APP]}}]
    if signers is None:
        actions.append({"name": "set_sawtooth_families", "args": {"families": families, "signers": "open"}})
    else:
        actions.append({"name": "set_sawtooth_families", "args": {"families": families}})
        actions.append({"name": "sawtooth_register", "args": {"public_keys": signers}})
    doc = documents.make_proposal(actions, member, at_s, ledger=ledger)
    ballot = documents.make_ballot(hashlib.sha256(doc).hexdigest(), True, member, at_s, ledger=ledger)
    return [Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")]


@contextmanager
def intkey_tp(endpoint: str, home: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The intkey TP connected to `endpoint`, its output in home/intkey-tp.log."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "intkey-tp.log", "wb")
    env = {**os.environ, "SAWTOOTH_HOME": str(home)}
    proc = subprocess.Popen(tp_command("intkey", endpoint), stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_registered(router: TpRouter, family: str = "intkey", version: str = "1.0", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while router.registered().get((family, version), 0) == 0:
        assert time.monotonic() < deadline, "the TP did not register"
        time.sleep(0.1)


def submit(url: str, *batches) -> str:
    body = BatchList(batches=list(batches)).SerializeToString()
    req = Request(f"{url}/batches", data=body, headers={"Content-Type": "application/octet-stream"})
    with urlopen(req, timeout=30) as r:
        assert r.status == 202
        return json.loads(r.read())["link"]


def wait_committed(link: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with urlopen(f"{link}&wait=20", timeout=60) as r:
            statuses = [d["status"] for d in json.loads(r.read())["data"]]
        if all(s == "COMMITTED" for s in statuses):
            return
        assert "INVALID" not in statuses and time.monotonic() < deadline, statuses
        time.sleep(0.2)


def metric(net: LocalNetwork, name: str, pattern: str) -> float:
    """The metric's value, -1 when absent or while the process does not answer (restarting)."""
    try:
        with urlopen(net.url_of(name, "/metrics"), timeout=5) as r:
            found = re.search("^" + pattern + r" (\S+)$", r.read().decode(), re.M)
    except OSError:
        return -1.0
    return float(found.group(1)) if found else -1.0


def get_json(url: str) -> tuple[int, Any]:
    """GET a REST URL: the status and the JSON body, error bodies included."""
    from urllib.error import HTTPError

    try:
        with urlopen(url, timeout=30) as r:
            return r.status, json.loads(r.read())
    except HTTPError as e:
        return e.code, json.loads(e.read())
