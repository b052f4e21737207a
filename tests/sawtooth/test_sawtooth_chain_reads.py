"""Sawtooth's REST reads of the chain on a real local network (three executors, each with the
intkey TP on the Sawtooth SDK's processor runtime): `GET /blocks`, `/batches`, `/transactions`
(and each `/{id}`) and `/receipts?id=` give back exactly the committed batches as they were
submitted, in Sawtooth's JSON shapes, page by page following `paging.next`; an Invalid batch is in
no block; unknown ids and bad parameters get Sawtooth's error codes.

Marked `protocol`. Time budget: about 60 s on the shared machine (start-up ~30 s).
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Iterator
from typing import Any

import cbor2
import pytest
from sawtooth_support import address, batch, intkey_txn, need_sdk, submit
from sawtooth_support import get_json as get

from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.sawtooth.pb.sawtooth_pb2 import Batch

pytestmark = pytest.mark.protocol
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def wait_final(link: str, timeout: float = 120) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = [d["status"] for d in get(f"{link}&wait=20")[1]["data"]]
        if all(s in ("COMMITTED", "INVALID") for s in statuses):
            return statuses
        assert time.monotonic() < deadline, statuses
        time.sleep(0.2)


def all_pages(url: str) -> list[dict[str, Any]]:
    """Every item of a list, following `paging.next` as Sawtooth clients do."""
    out: list[dict[str, Any]] = []
    while True:
        status, body = get(url)
        assert status == 200, body
        assert set(body) == {"data", "head", "link", "paging"} and HEX64.fullmatch(body["head"])
        out += body["data"]
        if "next" not in body["paging"]:
            return out
        url = body["paging"]["next"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    need_sdk()
    n = LocalNetwork(
        tmp_path_factory.mktemp("chain-reads") / "net", NetworkOptions(sawtooth=["intkey"], log_level="warning")
    )
    try:
        n.start(timeout=180)
        yield n
    finally:
        n.stop()


@pytest.fixture(scope="module")
def submitted(net: LocalNetwork) -> dict[str, Batch]:
    key = os.urandom(32)
    b = {
        "one": batch(key, intkey_txn("set", "ra", 5)),
        "two": batch(key, intkey_txn("set", "rb", 1), intkey_txn("inc", "rb", 2)),
        "bad": batch(key, intkey_txn("dec", "ra", 100)),
    }
    assert wait_final(submit(net.gateway_url, b["one"])) == ["COMMITTED"]
    assert wait_final(submit(net.gateway_url, b["two"], b["bad"])) == ["COMMITTED", "INVALID"]
    return b


def test_batches_and_transactions_come_back_as_submitted(net: LocalNetwork, submitted: dict[str, Batch]) -> None:
    url = net.gateway_url
    one, two, bad = submitted["one"], submitted["two"], submitted["bad"]
    status, body = get(f"{url}/batches/{two.header_signature}")
    assert status == 200 and set(body) == {"data", "head", "link"}
    got = body["data"]
    assert got["header_signature"] == two.header_signature and got["trace"] is False
    assert got["header"]["transaction_ids"] == [t.header_signature for t in two.transactions]
    for t, tj in zip(two.transactions, got["transactions"], strict=True):
        assert tj["header_signature"] == t.header_signature
        assert base64.b64decode(tj["payload"]) == t.payload
        assert tj["header"]["family_name"] == "intkey" and tj["header"]["inputs"] == [address("rb")]
    status, body = get(f"{url}/transactions/{one.transactions[0].header_signature}")
    assert status == 200 and cbor2.loads(base64.b64decode(body["data"]["payload"])) == {
        "Verb": "set",
        "Name": "ra",
        "Value": 5,
    }
    # the lists, a page of one item at a time: the committed ones, the Invalid batch in none
    batches = {b["header_signature"] for b in all_pages(f"{url}/batches?limit=1")}
    assert {one.header_signature, two.header_signature} <= batches and bad.header_signature not in batches
    txns = [t["header_signature"] for t in all_pages(f"{url}/transactions?limit=1")]
    assert len(txns) == len(set(txns))
    mine = {t.header_signature for b in (one, two) for t in b.transactions}
    assert mine <= set(txns) and bad.transactions[0].header_signature not in txns
    status, body = get(f"{url}/batches/{bad.header_signature}")
    assert (status, body["error"]["code"]) == (404, 71)


def test_blocks_hold_the_committed_batches_newest_first(net: LocalNetwork, submitted: dict[str, Batch]) -> None:
    url = net.gateway_url
    blocks = all_pages(f"{url}/blocks?limit=1")
    nums = [int(b["header"]["block_num"]) for b in blocks]
    assert nums == sorted(nums, reverse=True) and len(set(nums)) == len(nums)
    listed = [bid for b in blocks for bid in b["header"]["batch_ids"]]
    assert submitted["one"].header_signature in listed and submitted["two"].header_signature in listed
    assert submitted["bad"].header_signature not in listed
    for b in blocks:
        assert HEX64.fullmatch(b["header_signature"]) and HEX64.fullmatch(b["header"]["previous_block_id"])
        assert [x["header_signature"] for x in b["batches"]] == b["header"]["batch_ids"]
        status, body = get(f"{url}/blocks/{b['header_signature']}")
        assert status == 200 and body["data"] == b
    # the block holding batch "one" comes before (lower number) the block holding "two"
    where = {bid: int(b["header"]["block_num"]) for b in blocks for bid in b["header"]["batch_ids"]}
    assert where[submitted["one"].header_signature] < where[submitted["two"].header_signature]
    first = get(f"{url}/blocks?limit=1")[1]
    assert re.fullmatch(r"0x[0-9a-f]{16}", first["paging"].get("next_position", "0x" + "0" * 16))


def test_receipts_name_the_state_changes(net: LocalNetwork, submitted: dict[str, Batch]) -> None:
    url = net.gateway_url
    t1, t2 = (t.header_signature for t in submitted["two"].transactions)
    status, body = get(f"{url}/receipts?id={t1},{t2}")
    assert status == 200
    assert [r["transaction_id"] for r in body["data"]] == [t1, t2]
    (change,) = body["data"][1]["state_changes"]
    assert change["address"] == address("rb") and change["type"] == "SET"
    assert cbor2.loads(base64.b64decode(change["value"])) == {"rb": 3}
    status, body = get(f"{url}/receipts?id={submitted['bad'].transactions[0].header_signature}")
    assert (status, body["error"]["code"]) == (404, 80)


def test_sawtooth_error_codes_of_the_chain_reads(net: LocalNetwork) -> None:
    url = net.gateway_url
    cases = [
        ("/blocks/xyz", 400, 60),
        (f"/blocks/{'ab' * 64}", 400, 60),  # a block id here is a ledger block hash: 64 digits
        (f"/blocks/{'00' * 32}", 404, 70),
        ("/batches/12", 400, 60),
        (f"/batches/{'00' * 64}", 404, 71),
        (f"/transactions/{'00' * 64}", 404, 72),
        ("/receipts", 400, 66),
        ("/receipts?id=nothex", 400, 60),
        (f"/receipts?id={'00' * 64}", 404, 80),
        ("/blocks?start=12", 400, 54),
        ("/batches?start=zz", 400, 54),
        (f"/transactions?start={'00' * 64}", 400, 54),  # not a position in the list
        ("/transactions?limit=0", 400, 53),
        ("/blocks?limit=5000", 400, 54),
        (f"/blocks?head={'ab' * 32}", 404, 50),
    ]
    for target, status, code in cases:
        got, body = get(url + target)
        assert (got, body["error"]["code"]) == (status, code), (target, body)
        assert body["error"]["title"] and body["error"]["message"]
