"""A game of xo on a real local network started as `conclavium local up --sawtooth intkey,xo` is
(three executors, each with an intkey and an xo TP on the Sawtooth SDK's processor runtime): two
players, each with their own key, create a game and play it to a win through Sawtooth's REST API;
a take on a taken space, a take out of turn and a take after the end are INVALID with the TP's
message and change nothing; the board read back from `/state` is the game as played, on every
executor (none diverged), and intkey runs next to it.

Marked `protocol`. Time budget: about 60 s on the shared machine (start-up ~30 s, nine batches).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.request import Request, urlopen

import pytest
from sawtooth_support import batch, intkey_txn, need_sdk
from sawtooth_support import get_json as get

from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.sawtooth import signing
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch, BatchList

pytestmark = pytest.mark.protocol
PREFIX = hashlib.sha512(b"xo").hexdigest()[:6]


def xo_address(name: str) -> str:
    return PREFIX + hashlib.sha512(name.encode()).hexdigest()[:64]


def xo(key: bytes, name: str, action: str, space: int | str = "") -> Batch:
    a = xo_address(name)
    return batch(key, ("xo", "1.0", f"{name},{action},{space}".encode(), [a], [a]))


def play(url: str, b: Batch, timeout: float = 120) -> dict[str, Any]:
    """Submits one batch and waits for its final status."""
    body = BatchList(batches=[b]).SerializeToString()
    req = Request(f"{url}/batches", data=body, headers={"Content-Type": "application/octet-stream"})
    with urlopen(req, timeout=30) as r:
        link = json.loads(r.read())["link"]
    deadline = time.monotonic() + timeout
    while True:
        (status,) = get(f"{link}&wait=20")[1]["data"]
        if status["status"] in ("COMMITTED", "INVALID"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def game(url: str, name: str) -> list[str]:
    status, body = get(f"{url}/state/{xo_address(name)}")
    assert status == 200, body
    return base64.b64decode(body["data"]).decode().split(",")


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    need_sdk()
    opts = NetworkOptions(sawtooth=["intkey", "xo"], log_level="warning")
    n = LocalNetwork(tmp_path_factory.mktemp("xo") / "net", opts)
    try:
        n.start(timeout=180)
        yield n
    finally:
        n.stop()


def test_a_game_of_xo_to_a_win(net: LocalNetwork) -> None:
    url = net.gateway_url
    p1, p2 = os.urandom(32), os.urandom(32)
    k1, k2 = signing.public_key(p1), signing.public_key(p2)
    assert play(url, xo(p1, "g1", "create"))["status"] == "COMMITTED"
    assert game(url, "g1") == ["g1", "---------", "P1-NEXT", "", ""]
    moves = [(p1, 1), (p2, 4), (p1, 2), (p2, 5)]
    for key, space in moves:
        assert play(url, xo(key, "g1", "take", space))["status"] == "COMMITTED"
    assert game(url, "g1") == ["g1", "XX-OO----", "P1-NEXT", k1, k2]

    refused = [
        (xo(p1, "g1", "take", 4), "Invalid action: space 4 already taken"),
        (xo(p2, "g1", "take", 3), f"Not this player's turn: {k2[:6]}"),
        (xo(p1, "g1", "take", 10), "Space must be an integer from 1 to 9"),
        (xo(p1, "g1", "create"), "Invalid action: game already exists: g1"),
        (xo(p1, "nothere", "take", 1), "Invalid action: take requires an existing game"),
    ]
    for b, message in refused:
        status = play(url, b)
        assert status["status"] == "INVALID", status
        (item,) = status["invalid_transactions"]
        assert item == {"id": b.transactions[0].header_signature, "message": message}
    assert game(url, "g1") == ["g1", "XX-OO----", "P1-NEXT", k1, k2]  # nothing changed

    assert play(url, xo(p1, "g1", "take", 3))["status"] == "COMMITTED"  # X: 1, 2, 3
    assert game(url, "g1") == ["g1", "XXXOO----", "P1-WIN", k1, k2]
    status = play(url, xo(p2, "g1", "take", 6))
    assert status["invalid_transactions"][0]["message"] == "Invalid action: the game has ended"

    # intkey runs next to it, and every executor executed the same batches without a fork
    assert play(url, batch(p1, intkey_txn("set", "next-to-xo", 1)))["status"] == "COMMITTED"
    for i in range(3):
        with urlopen(net.url_of(f"executor-{i}", "/metrics"), timeout=5) as r:
            text = r.read().decode()
        assert re.search(r"^conclavium_executor_fork_detected 0\.0$", text, re.M)
    assert play(url, xo(p1, "g1", "delete"))["status"] == "COMMITTED"
    assert get(f"{url}/state/{xo_address('g1')}")[1]["error"]["code"] == 75
