"""Receipts verify offline with only the consortium identity, and any change breaks them."""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ledger_support import identity, member_keys, user_keys

from conclavium import consortium, cose, receipt
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64d, b64e
from conclavium.local.network import LocalNetwork
from conclavium.sdk.client import Client


@pytest.fixture(scope="module")
def real_receipt(network: LocalNetwork) -> dict[str, Any]:
    async def fetch() -> dict[str, Any]:
        c = Client(network.gateway_url, user_keys(network)[0])
        try:
            txs = [
                await c.build([{"op": "put", "map": "public:receipts", "key": f"k{i}", "value": i}]) for i in range(8)
            ]
            hashes = await c.submit_batch(txs)
            for h in hashes:
                await c.wait(h)
            r = await c.receipt(hashes[2])
            assert r["path"], "one batch lands in one block, so the path is not empty"
            return r
        finally:
            await c.close()

    return asyncio.run(fetch())


def _flip_hex(value: str, pos: int = 0) -> str:
    b = bytearray(bytes.fromhex(value))
    b[pos] ^= 1
    return b.hex()


def _flip_b64(value: str) -> str:
    b = bytearray(b64d(value))
    b[5] ^= 1
    return b64e(bytes(b))


Mutation = Callable[[dict[str, Any]], None]

MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "tx_hash": (lambda r: r.update(tx_hash=_flip_hex(r["tx_hash"])), "bad_inclusion_proof"),
    "write_digest": (lambda r: r.update(write_digest=_flip_hex(r["write_digest"], 31)), "bad_inclusion_proof"),
    "path": (lambda r: r["path"][0].__setitem__(1, _flip_hex(r["path"][0][1])), "bad_inclusion_proof"),
    "path side": (
        lambda r: r["path"][0].__setitem__(0, "l" if r["path"][0][0] == "r" else "r"),
        "bad_inclusion_proof",
    ),
    "root": (lambda r: r.update(root=_flip_hex(r["root"], 7)), "bad_inclusion_proof"),
    "block_hash": (lambda r: r.update(block_hash=_flip_hex(r["block_hash"])), "bad_signature"),
    "height": (lambda r: r.update(height=r["height"] + 1), "bad_signature"),
    "quorum lowered": (lambda r: r.update(quorum=1), "bad_signature"),
    "ts_ms moved back": (lambda r: r.update(ts_ms=r["ts_ms"] - 1), "bad_signature"),
    "ts_ms moved on": (lambda r: r.update(ts_ms=r["ts_ms"] + 1), "bad_signature"),
    "ts_ms dropped": (lambda r: r.pop("ts_ms"), "malformed"),
    "time said unsigned": (lambda r: r.update(v=receipt.UNSIGNED_TIME_VERSION), "no_time"),
    "ledger": (lambda r: r.update(ledger="other"), "wrong_ledger"),
    "signature": (
        lambda r: r["signatures"][0].update(signature=_flip_b64(r["signatures"][0]["signature"])),
        "bad_signature",
    ),
    "node id": (lambda r: r["signatures"][0].update(node="00" * 32), "untrusted_node"),
    "endorsement": (
        lambda r: r["signatures"][0].update(endorsement=_flip_b64(r["signatures"][0]["endorsement"])),
        "untrusted_node",
    ),
    "signing key swapped": (
        lambda r: r["signatures"][0].update(signing_key=r["signatures"][1]["signing_key"]),
        "untrusted_node",
    ),
    "signatures dropped": (lambda r: r.update(signatures=r["signatures"][:1]), "insufficient_signatures"),
    "duplicate signer": (lambda r: r.update(signatures=[r["signatures"][0]] * 3), "insufficient_signatures"),
    "garbage": (lambda r: r.update(path="nonsense"), "malformed"),
    "version": (lambda r: r.update(v=1), "malformed"),
}


def _statement(r: dict[str, Any], ts_ms: int | None = None) -> bytes:
    """What the signers of `r` signed, or the same statement at another time."""
    at = r["ts_ms"] if ts_ms is None else ts_ms
    return receipt.statement(
        r["ledger"], r["height"], bytes.fromhex(r["block_hash"]), bytes.fromhex(r["root"]), r["quorum"], at
    )


def test_real_receipt_verifies(network: LocalNetwork, real_receipt: dict[str, Any]) -> None:
    v = receipt.verify(real_receipt, identity(network), tx_hash=real_receipt["tx_hash"])
    assert v.height == real_receipt["height"] and len(v.members) >= 2 and len(v.signers) >= 2


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_any_change_breaks_the_receipt(network: LocalNetwork, real_receipt: dict[str, Any], name: str) -> None:
    mutate, code = MUTATIONS[name]
    r = copy.deepcopy(real_receipt)
    mutate(r)
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, identity(network))
    assert e.value.code == code, str(e.value)


def test_signatures_of_nodes_a_stranger_endorsed_do_not_count(
    network: LocalNetwork, real_receipt: dict[str, Any]
) -> None:
    """Nodes endorsed by keys outside the identity are not counted, however many and however good
    their signatures; and a receipt checked against another consortium's identity does not verify."""
    r = copy.deepcopy(real_receipt)
    stmt = _statement(r)
    for _ in range(3):
        stranger, node = PrivateKey.generate(), PrivateKey.generate()
        doc = consortium.make_node_endorsement(stranger, r["ledger"], node.public_key.pem, 0)
        r["signatures"].append(
            {
                "node": node.key_id,
                "signature": b64e(node.sign(stmt)),
                "signing_key": node.public_key.pem,
                "endorsement": b64e(doc),
            }
        )
    r["signatures"] = r["signatures"][-3:] + r["signatures"][:1]  # one genuine member only
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, identity(network))
    assert e.value.code == "insufficient_signatures" and "not a member" in str(e.value)
    others = [{"name": f"m{i}", "public_key": PrivateKey.generate().public_key.pem} for i in range(3)]
    foreign = consortium.load(consortium.make_identity("local", others))
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, foreign)
    assert e.value.code == "insufficient_signatures"


def test_k_and_retirement_come_from_the_identity_not_the_receipt(
    network: LocalNetwork, real_receipt: dict[str, Any]
) -> None:
    ident = identity(network)
    # a consortium that needs more members than signed: refused, whatever the receipt's quorum says
    extra = {"name": "zed", "public_key": PrivateKey.generate().public_key.pem}
    stricter = consortium.load(consortium.make_identity("local", [*ident.body["members"], extra], threshold=4))
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, stricter)
    assert e.value.code == "insufficient_signatures"
    # the signers retired before this height, in a later identity version: no longer counted
    retired = [{"node": s["node"], "after_height": real_receipt["height"] - 1} for s in real_receipt["signatures"]]
    nxt = consortium.next_identity({"identity": ident.body, "signatures": []}, retired_nodes=retired)
    for key in member_keys(network):
        nxt = consortium.sign(nxt, key)
    later = consortium.verify_next(ident, nxt)
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, later)
    assert e.value.code == "insufficient_signatures" and "retired after height" in str(e.value)
    # retired after this height: they still count
    kept = [{**x, "after_height": real_receipt["height"]} for x in retired]
    nxt = consortium.next_identity({"identity": ident.body, "signatures": []}, retired_nodes=kept)
    assert receipt.verify(real_receipt, consortium.load(nxt)).height == real_receipt["height"]


def test_wrong_transaction(network: LocalNetwork, real_receipt: dict[str, Any]) -> None:
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, identity(network), tx_hash="00" * 32)
    assert e.value.code == "wrong_transaction"


def _reendorsed(network: LocalNetwork, r: dict[str, Any], not_before: int, not_after: int) -> None:
    """Every signer's endorsement replaced by its own member's endorsement of the same node key,
    valid only from `not_before` to `not_after`: genuine signatures, genuine members,
    endorsements that do not hold at the receipt's time."""
    keys = {k.key_id: k for k in member_keys(network)}
    for s in r["signatures"]:
        member = keys[cose.parse1(b64d(s["endorsement"])).kid]
        doc = consortium.make_node_endorsement(member, r["ledger"], s["signing_key"], not_before, not_after)
        s["endorsement"] = b64e(doc)


@pytest.mark.parametrize(
    ("window", "code"),
    [((-7200, -3600), "endorsement_expired"), ((3600, 7200), "endorsement_not_yet_valid")],
)
def test_signers_whose_endorsement_does_not_hold_at_the_receipts_time_do_not_count(
    network: LocalNetwork, real_receipt: dict[str, Any], window: tuple[int, int], code: str, tmp_path: Path
) -> None:
    r = copy.deepcopy(real_receipt)
    at = r["ts_ms"] // 1000
    _reendorsed(network, r, at + window[0], at + window[1])
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, identity(network))
    assert e.value.code == "insufficient_signatures", e.value
    assert sorted(e.value.not_counted.values()) == [code] * len({s["node"] for s in r["signatures"]})
    out = _cli_verify(network, r, tmp_path)
    assert not out["valid"] and set(out["not_counted"].values()) == {code}
    # no other time is taken: the caller's time inside the new endorsements' window is refused
    inside = (at + (window[0] + window[1]) // 2) * 1000
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(r, identity(network), at_ms=inside)
    assert e.value.code == "time_signed"
    out = _cli_verify(network, r, tmp_path, "--at", str(inside // 1000))
    assert not out["valid"] and out["code"] == "time_signed"


def _expired_node(network: LocalNetwork, r: dict[str, Any], member_of_signer: str) -> tuple[PrivateKey, str]:
    """A node key of the signer's member, endorsed from two hours to one hour before the receipt's
    block: a node that was retired (its endorsement ran out) before the block; its key is the
    attacker's."""
    keys = {k.key_id: k for k in member_keys(network)}
    member = keys[member_of_signer]
    node = PrivateKey.generate()
    at = r["ts_ms"] // 1000
    return node, b64e(consortium.make_node_endorsement(member, r["ledger"], node.public_key.pem, at - 7200, at - 3600))


def test_a_retired_nodes_key_cannot_move_a_receipt_to_when_it_counted(
    network: LocalNetwork, real_receipt: dict[str, Any], tmp_path: Path
) -> None:
    """The attack: the receipt's block has genuine signatures of nodes of k members; one member's
    own nodes are dropped (with those of any member beyond k), and in their place a node of that
    member whose endorsement expired before the block signs (the attacker holds its key). Signed at
    the block's true time it is not counted; signed at a time its endorsement held, with ts_ms
    moved to match, the genuine signatures no longer verify: the time is in what every signer
    signed."""
    ident = identity(network)
    real = receipt.verify(real_receipt, ident)
    kid = {s["node"]: cose.parse1(b64d(s["endorsement"])).kid for s in real_receipt["signatures"]}
    victim = real.members[0]
    node, endorsement = _expired_node(network, real_receipt, victim)
    # the other members' nodes re-endorsed by their members for a day either side of the block, so
    # their endorsements hold at any time the attacker may claim: only the signatures can tell
    at = real_receipt["ts_ms"] // 1000
    widened = copy.deepcopy(real_receipt)
    _reendorsed(network, widened, at - 86400, at + 86400)
    helpers = real.members[1 : ident.threshold]  # with the victim's nodes they would make k, without: one short
    others = [s for s in widened["signatures"] if kid[s["node"]] in helpers]

    def with_attacker(ts_ms: int) -> dict[str, Any]:
        r = copy.deepcopy(real_receipt)
        sig = {
            "node": node.key_id,
            "signature": b64e(node.sign(_statement(r, ts_ms))),
            "signing_key": node.public_key.pem,
            "endorsement": endorsement,
        }
        r.update(ts_ms=ts_ms, signatures=[*copy.deepcopy(others), sig])
        return r

    # the receipt without the victim's genuine nodes falls short of k members (the attack's premise)
    assert len({kid[s["node"]] for s in others}) < ident.threshold
    # signed at the block's signed time: the retired node is not counted
    now = with_attacker(real_receipt["ts_ms"])
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(now, ident)
    assert e.value.code == "insufficient_signatures" and e.value.not_counted == {node.key_id: "endorsement_expired"}
    # moved to when the node still counted: the honest signatures are over another time
    then = with_attacker(real_receipt["ts_ms"] - 5400 * 1000)
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(then, ident)
    assert e.value.code == "bad_signature", e.value
    out = _cli_verify(network, then, tmp_path)
    assert not out["valid"] and out["code"] == "bad_signature"
    # nor as a receipt whose time is unsigned, at the time the attacker would like
    unsigned = {**then, "v": receipt.UNSIGNED_TIME_VERSION}
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(unsigned, ident, at_ms=then["ts_ms"])
    assert e.value.code == "bad_signature", e.value


def test_the_time_is_the_signed_one(network: LocalNetwork, real_receipt: dict[str, Any], tmp_path: Path) -> None:
    ident = identity(network)
    year_later = real_receipt["ts_ms"] + 400 * 86400 * 1000  # the local network endorses for 365 days
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify({**real_receipt, "ts_ms": year_later}, ident)
    assert e.value.code == "insufficient_signatures" and set(e.value.not_counted.values()) == {"endorsement_expired"}
    # endorsements that hold then too: the signatures say the time was another
    lasting = copy.deepcopy(real_receipt)
    _reendorsed(network, lasting, real_receipt["ts_ms"] // 1000 - 60, year_later // 1000 + 60)
    assert receipt.verify(lasting, ident).height == real_receipt["height"]
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify({**lasting, "ts_ms": year_later}, ident)
    assert e.value.code == "bad_signature"
    with pytest.raises(receipt.ReceiptError) as e:
        receipt.verify(real_receipt, ident, at_ms=year_later)
    assert e.value.code == "time_signed"
    assert _cli_verify(network, real_receipt, tmp_path)["valid"]
    out = _cli_verify(network, real_receipt, tmp_path, "--at", str(year_later // 1000))
    assert not out["valid"] and out["code"] == "time_signed"


def _cli_verify(network: LocalNetwork, r: dict[str, Any], tmp: Path, *extra: str) -> dict[str, Any]:
    (tmp / "r.json").write_text(json.dumps(r))
    argv = [sys.executable, "-m", "conclavium.cli.main", "receipt", "verify", str(tmp / "r.json")]
    p = subprocess.run(
        [*argv, "--consortium", str(network.dir / "consortium.json"), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = dict(json.loads(p.stdout))
    assert (p.returncode == 0) == out["valid"], p
    return out
