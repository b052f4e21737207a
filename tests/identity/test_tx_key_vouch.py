"""How vouches for the transaction key are counted (`conclavium.tx_key_vouch`): by distinct members
of the identity the client holds, never by nodes or by copies; the real-process attacks are in
tests/confidentiality/test_client_trust.py."""

from __future__ import annotations

import os
from typing import Any

import pytest

from conclavium import consortium, read_answer, tx_key_vouch
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e

LEDGER = "vouch-test"
MEMBERS = [PrivateKey.generate() for _ in range(3)]
IDENTITY = consortium.load(
    consortium.make_identity(LEDGER, [{"name": f"m{i}", "public_key": k.public_key.pem} for i, k in enumerate(MEMBERS)])
)


def _row(public: bytes, key_id: str = "gen-1", from_height: int = 1) -> dict[str, Any]:
    return {"id": key_id, "public": public.hex(), "signature": "", "from_height": from_height, "from_ts": 0}


def _vouch(
    member: int, row: dict[str, Any], node: PrivateKey | None = None, nonce: str | None = None, height: int = 10
) -> dict[str, Any]:
    node = node or PrivateKey.generate()
    endorsement = b64e(consortium.make_node_endorsement(MEMBERS[member], LEDGER, node.public_key.pem, 0))
    return read_answer.sign(node, endorsement, LEDGER, height, tx_key_vouch.request(nonce), {"tx_key": row})


def test_nodes_of_k_members_make_a_key() -> None:
    key = os.urandom(32)
    got = tx_key_vouch.verify({"vouches": [_vouch(0, _row(key)), _vouch(2, _row(key))]}, IDENTITY)
    assert got.public == key and got.id == "gen-1" and got.members == sorted([MEMBERS[0].key_id, MEMBERS[2].key_id])


def test_one_member_counts_once_however_many_nodes_or_copies() -> None:
    row = _row(os.urandom(32))
    node = PrivateKey.generate()
    one = _vouch(1, row, node)
    for vouches in ([one, one, one], [_vouch(1, row) for _ in range(5)]):
        with pytest.raises(tx_key_vouch.TxKeyError) as e:
            tx_key_vouch.verify({"vouches": vouches}, IDENTITY)
        assert e.value.code == "insufficient_vouches" and "at most 1 distinct" in e.value.message


def test_vouches_for_different_keys_do_not_add_up() -> None:
    with pytest.raises(tx_key_vouch.TxKeyError) as e:
        tx_key_vouch.verify({"vouches": [_vouch(0, _row(os.urandom(32))), _vouch(1, _row(os.urandom(32)))]}, IDENTITY)
    assert e.value.code == "insufficient_vouches"


def test_a_stranger_endorsed_node_or_a_changed_answer_is_not_counted() -> None:
    key = os.urandom(32)
    stranger = PrivateKey.generate()
    node = PrivateKey.generate()
    foreign = read_answer.sign(
        node,
        b64e(consortium.make_node_endorsement(stranger, LEDGER, node.public_key.pem, 0)),
        LEDGER,
        10,
        tx_key_vouch.request(),
        {"tx_key": _row(key)},
    )
    changed = _vouch(2, _row(os.urandom(32)))
    changed["tx_key"] = _row(key)
    with pytest.raises(tx_key_vouch.TxKeyError) as e:
        tx_key_vouch.verify({"vouches": [_vouch(0, _row(key)), foreign, changed]}, IDENTITY)
    assert e.value.code == "insufficient_vouches"
    assert "untrusted_node" in e.value.message and "bad_signature" in e.value.message


def test_the_newest_key_vouched_for_wins_and_a_tie_is_refused() -> None:
    old, new = _row(os.urandom(32), "gen-1", 1), _row(os.urandom(32), "gen-2", 50)
    vouches = [_vouch(0, old), _vouch(1, old), _vouch(0, new), _vouch(2, new)]
    assert tx_key_vouch.verify({"vouches": vouches}, IDENTITY).id == "gen-2"
    rival = _row(os.urandom(32), "gen-3", 50)
    with pytest.raises(tx_key_vouch.TxKeyError) as e:
        tx_key_vouch.verify({"vouches": [*vouches, _vouch(1, rival), _vouch(2, rival)]}, IDENTITY)
    assert e.value.code == "conflicting_vouches"


@pytest.mark.parametrize("doc", [None, [], {"vouches": "x"}, {"vouches": [1] * 1001}])
def test_malformed_documents(doc: Any) -> None:
    with pytest.raises(tx_key_vouch.TxKeyError) as e:
        tx_key_vouch.verify(doc, IDENTITY)
    assert e.value.code == "malformed"


def test_a_vouch_for_a_malformed_key_is_not_counted() -> None:
    bad = {"id": "gen-1", "public": "00" * 31, "signature": "", "from_height": 1, "from_ts": 0}
    with pytest.raises(tx_key_vouch.TxKeyError) as e:
        tx_key_vouch.verify({"vouches": [_vouch(0, bad), _vouch(1, bad)]}, IDENTITY)
    assert e.value.code == "insufficient_vouches" and "malformed" in e.value.message


def test_only_answers_to_this_nonce_at_the_height_asked_count() -> None:
    """A vouch to another nonce (recorded for another client, or before a rotation) or to none, or
    read at a state older than the client saw, is not counted."""
    key, nonce = os.urandom(32), tx_key_vouch.new_nonce()
    fresh = [_vouch(0, _row(key), nonce=nonce), _vouch(1, _row(key), nonce=nonce)]
    assert tx_key_vouch.verify({"vouches": fresh}, IDENTITY, nonce=nonce, min_height=10).public == key
    for stale in (
        [_vouch(0, _row(key), nonce=tx_key_vouch.new_nonce()), fresh[1]],
        [_vouch(0, _row(key)), fresh[1]],
        [_vouch(0, _row(key), nonce=nonce, height=9), fresh[1]],
    ):
        with pytest.raises(tx_key_vouch.TxKeyError) as e:
            tx_key_vouch.verify({"vouches": stale}, IDENTITY, nonce=nonce, min_height=10)
        assert e.value.code == "insufficient_vouches" and (
            "wrong_request" in e.value.message or "stale_read" in e.value.message
        )
    with pytest.raises(tx_key_vouch.TxKeyError):
        tx_key_vouch.verify({"vouches": fresh}, IDENTITY)  # answers to a nonce are not answers without one
    assert tx_key_vouch.NONCE_PATTERN.fullmatch(nonce)
