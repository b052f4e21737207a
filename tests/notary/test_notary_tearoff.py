"""Corda's transaction id and tear-off, computed here and checked against the algorithm written
out by hand (no Corda runtime can run here to give reference vectors: docs/notary.md)."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest

from conclavium.notary import FilteredTransaction, TearOffError, WireTransaction
from conclavium.notary.request import NOTARY_GROUPS
from conclavium.notary.tearoff import (
    ALL_ONES_HASH,
    INPUTS_GROUP,
    NOTARY_GROUP,
    OUTPUTS_GROUP,
    REFERENCES_GROUP,
    ZERO_HASH,
    compute_nonce,
    merkle_root,
)


def h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def hd(b: bytes) -> bytes:
    return h(h(b))


def test_the_id_follows_cordas_algorithm_step_by_step() -> None:
    salt = bytes(range(32))
    groups = {INPUTS_GROUP: [b"in0", b"in1", b"in2"], NOTARY_GROUP: [b"notary"]}
    wtx = WireTransaction(groups, salt)
    # nonce = SHA256d(salt || int32 group || int32 index); component hash = SHA256d(nonce || bytes)
    nonce = lambda g, i: hd(salt + struct.pack(">ii", g, i))  # noqa: E731
    leaves = [hd(nonce(0, i) + c) for i, c in enumerate(groups[0])]
    inputs_root = h(h(leaves[0] + leaves[1]) + h(leaves[2] + ZERO_HASH))  # padded to 4 with the zero hash
    notary_root = hd(nonce(4, 0) + b"notary")  # one leaf: the root is the leaf
    # group hashes 0..4, absent groups 1-3 as the all-ones hash, padded to 8 leaves with zero hashes
    top = [inputs_root, ALL_ONES_HASH, ALL_ONES_HASH, ALL_ONES_HASH, notary_root, ZERO_HASH, ZERO_HASH, ZERO_HASH]
    level1 = [h(top[i] + top[i + 1]) for i in range(0, 8, 2)]
    expected = h(h(level1[0] + level1[1]) + h(level1[2] + level1[3]))
    assert wtx.group_hashes == top[:5]
    assert wtx.id == expected
    assert compute_nonce(salt, 4, 0) == nonce(4, 0)


def test_a_tear_off_of_the_notary_groups_verifies_and_hides_the_rest() -> None:
    wtx = WireTransaction({0: [b"a"], 1: [b"secret output"], 4: [b"n"], 7: [b"r1", b"r2"]}, os.urandom(32))
    ftx = wtx.tear_off(NOTARY_GROUPS)
    ftx.verify()
    assert [g.index for g in ftx.groups] == [0, 4, 7]
    assert b"secret output" not in repr(ftx.to_json()).encode()
    again = FilteredTransaction.from_json(ftx.to_json())
    again.verify()
    assert again.components(REFERENCES_GROUP) == [b"r1", b"r2"] and again.components(5) == []


def _tampered(ftx: FilteredTransaction, **change: object) -> FilteredTransaction:
    doc = ftx.to_json()
    for path, value in change.items():
        group, field, i = path.split("_")
        doc["groups"][int(group)][field][int(i)] = value
    return FilteredTransaction.from_json(doc)


def test_every_tampering_is_caught() -> None:
    wtx = WireTransaction({0: [b"a", b"b"], 1: [b"out"], 4: [b"n"]}, os.urandom(32))
    ftx = wtx.tear_off([0, 4])
    with pytest.raises(TearOffError, match="group 0"):
        _tampered(ftx, **{"0_components_1": "Yw=="}).verify()  # another component
    with pytest.raises(TearOffError, match="group 0"):
        _tampered(ftx, **{"0_nonces_0": "00" * 32}).verify()  # another nonce
    doc = ftx.to_json()
    doc["groups"][0]["components"].pop()
    doc["groups"][0]["nonces"].pop()
    with pytest.raises(TearOffError, match="group 0"):
        FilteredTransaction.from_json(doc).verify()  # an input left out
    doc = ftx.to_json()
    doc["id"] = "11" * 32
    with pytest.raises(TearOffError, match="transaction id"):
        FilteredTransaction.from_json(doc).verify()
    doc = ftx.to_json()
    doc["group_hashes"][1] = ALL_ONES_HASH.hex()  # pretend the outputs are absent
    with pytest.raises(TearOffError, match="transaction id"):
        FilteredTransaction.from_json(doc).verify()


def test_a_hidden_group_that_exists_is_not_taken_for_an_empty_one() -> None:
    wtx = WireTransaction({0: [b"a"], 4: [b"n"], 7: [b"ref"]}, os.urandom(32))
    ftx = wtx.tear_off([0, 4])  # references torn off
    ftx.verify()
    with pytest.raises(TearOffError, match=r"group 7 \(references\) exists but is not revealed"):
        ftx.components(REFERENCES_GROUP)
    assert ftx.components(OUTPUTS_GROUP) == []  # absent: all-ones hash


@pytest.mark.parametrize(
    "doc",
    [
        None,
        {"id": "00" * 32, "group_hashes": [], "groups": []},
        {"id": "00" * 32, "group_hashes": ["zz" * 32], "groups": []},
        {"id": "00" * 32, "group_hashes": ["00" * 32], "groups": [{"index": -1, "components": [], "nonces": []}]},
        {"id": "00" * 32, "group_hashes": ["00" * 32], "groups": [{"index": 0, "components": ["!"], "nonces": []}]},
        {"id": "00" * 32, "group_hashes": ["00" * 32], "groups": [], "extra": 1},
    ],
)
def test_malformed_filtered_transactions_are_refused(doc: object) -> None:
    with pytest.raises(TearOffError):
        FilteredTransaction.from_json(doc).verify()


def test_merkle_root_of_nothing_is_an_error() -> None:
    with pytest.raises(TearOffError):
        merkle_root([])


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 33, 100])
def test_merkle_root_equals_the_tree_padded_with_zero_leaves_to_a_power_of_two(n: int) -> None:
    """Corda pads the leaves with zero hashes to a power of two; merkle_root pads level by level
    with all-zero subtrees' roots instead: the same root for every leaf count."""
    leaves = [h(os.urandom(8)) for _ in range(n)]
    given = list(leaves)
    level = leaves + [ZERO_HASH] * ((1 << (n - 1).bit_length()) - n)
    while len(level) > 1:
        level = [h(level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    assert merkle_root(leaves) == level[0]
    assert leaves == given  # the caller's list is left as it was
