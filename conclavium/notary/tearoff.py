"""Corda's transaction id and its Merkle tear-off (`FilteredTransaction`), from R3's published
algorithm (Corda 4, `net.corda.core.transactions.WireTransaction` / `FilteredTransaction` and
`net.corda.core.crypto.CryptoUtils`), with SHA-256:

- a transaction is a list of *component groups*, indexed by `ComponentGroupEnum`'s ordinals
  (inputs 0, outputs 1, commands 2, attachments 3, notary 4, time window 5, signers 6,
  references 7, network parameters 8); each component is opaque bytes, and no group is empty;
- each component has a nonce, `SHA256d(privacySalt || int32(group) || int32(index))`
  (`computeNonce`), and a hash, `SHA256d(nonce || component)` (`componentHash`);
- a group's root is the Merkle root of its component hashes (`MerkleTree.getMerkleTree`: leaves
  padded with the zero hash to a power of two, each node SHA-256(left || right));
- the group hashes are the roots of groups 0 .. highest present, the all-ones hash standing for an
  absent group; the transaction id is the Merkle root of the group hashes.

A filtered transaction reveals some groups (their components and nonces, not the salt) and gives
every group hash, so that a verifier checks the revealed components against the id without seeing
the rest. Corda's `FilteredComponentGroup` carries a partial Merkle tree so that a group may be
revealed in part; a non-validating notary needs its groups whole (`checkAllComponentsVisible`), so
here a revealed group is always whole and no partial tree is carried. The component bytes are
Corda's AMQP serialisation in Corda; here they are the encodings of `conclavium.notary.request`
(docs/notary.md), so ids computed here are not ids of Corda transactions.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, NamedTuple

from conclavium.encoding import b64e

INPUTS_GROUP, OUTPUTS_GROUP, COMMANDS_GROUP, ATTACHMENTS_GROUP = 0, 1, 2, 3
NOTARY_GROUP, TIMEWINDOW_GROUP, SIGNERS_GROUP, REFERENCES_GROUP, PARAMETERS_GROUP = 4, 5, 6, 7, 8
GROUP_NAMES = (
    "inputs",
    "outputs",
    "commands",
    "attachments",
    "notary",
    "timewindow",
    "signers",
    "references",
    "parameters",
)
ZERO_HASH = bytes(32)
ALL_ONES_HASH = b"\xff" * 32
SALT_BYTES = 32
MAX_GROUPS = 64  # group indices above Corda's known ones are allowed (as Corda allows), up to this
MAX_COMPONENTS = 4096
_sha256 = hashlib.sha256


class TearOffError(ValueError):
    """A filtered transaction that does not verify against its id, or is malformed."""


def sha256(data: bytes) -> bytes:
    return _sha256(data).digest()


def sha256d(data: bytes) -> bytes:
    return _sha256(_sha256(data).digest()).digest()


def compute_nonce(salt: bytes, group: int, index: int) -> bytes:
    """Corda's `computeNonce`: SHA256d(privacySalt || int32 group || int32 index), big-endian."""
    return sha256d(salt + struct.pack(">ii", group, index))


def component_hash(nonce: bytes, component: bytes) -> bytes:
    """Corda's `componentHash`: SHA256d(nonce || serialised component)."""
    return _sha256(_sha256(nonce + component).digest()).digest()


def merkle_root(leaves: list[bytes]) -> bytes:
    """Corda's `MerkleTree.getMerkleTree(...).hash`: zero-hash padding to a power of two. Padded
    level by level with the root of an all-zero subtree of that height (the same tree, without
    hashing its padding again for every request)."""
    if not leaves:
        raise TearOffError("cannot compute a Merkle root over no leaves")
    level, height = leaves, 0
    while len(level) > 1:
        if len(level) & 1:
            level = [*level, _ZERO_SUBTREES[height]]
        pairs = iter(level)
        level = [_sha256(left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
        height += 1
    return level[0]


def _zero_subtrees(levels: int) -> list[bytes]:
    """The roots of all-zero subtrees: the zero hash, then SHA-256 of two of the one below."""
    roots = [ZERO_HASH]
    for _ in range(levels):
        roots.append(_sha256(roots[-1] + roots[-1]).digest())
    return roots


_ZERO_SUBTREES = _zero_subtrees(64)  # a tree of 2^64 leaves is never built


@dataclass(frozen=True)
class WireTransaction:
    """The component groups of a transaction and its privacy salt (what its parties hold)."""

    groups: Mapping[int, list[bytes]]
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.salt) != SALT_BYTES:
            raise TearOffError(f"the privacy salt is {SALT_BYTES} bytes")
        if not self.groups or any(not comps for comps in self.groups.values()):
            raise TearOffError("a transaction has at least one group and no empty group")
        if any(not 0 <= g < MAX_GROUPS for g in self.groups):
            raise TearOffError(f"group indices run from 0 to {MAX_GROUPS - 1}")

    def nonces(self, group: int) -> list[bytes]:
        return [compute_nonce(self.salt, group, i) for i in range(len(self.groups[group]))]

    def group_root(self, group: int) -> bytes:
        comps = self.groups[group]
        return merkle_root([component_hash(n, c) for n, c in zip(self.nonces(group), comps, strict=True)])

    @cached_property
    def group_hashes(self) -> list[bytes]:
        """Computed once: the id, a tear-off and `to_json` all need them (the groups are frozen)."""
        return [self.group_root(g) if g in self.groups else ALL_ONES_HASH for g in range(max(self.groups) + 1)]

    @cached_property
    def id(self) -> bytes:
        return merkle_root(self.group_hashes)

    def to_json(self) -> dict[str, Any]:
        """The whole transaction, as its parties keep it (the salt included: keep it private)."""
        return {
            "id": self.id.hex(),
            "salt": self.salt.hex(),
            "groups": {str(g): [b64e(c) for c in comps] for g, comps in sorted(self.groups.items())},
        }

    @classmethod
    def from_json(cls, obj: Any) -> WireTransaction:
        if not isinstance(obj, dict) or not isinstance(obj.get("groups"), dict) or not isinstance(obj.get("salt"), str):
            raise TearOffError("a transaction is {salt, groups}")
        try:
            salt = bytes.fromhex(obj["salt"])
            groups = {int(g): [_b64(c) for c in comps] for g, comps in obj["groups"].items()}
        except (ValueError, TypeError):
            raise TearOffError("a transaction's salt is hex and its groups lists of base64 components") from None
        wtx = cls(groups, salt)
        if "id" in obj and obj["id"] != wtx.id.hex():
            raise TearOffError("the transaction's components do not lead to its id")
        return wtx

    def tear_off(self, reveal: Iterable[int]) -> FilteredTransaction:
        """The filtered transaction revealing whole groups `reveal` (absent ones are skipped:
        their all-ones hash already says they are empty)."""
        shown = sorted({g for g in reveal if g in self.groups})
        revealed = [FilteredGroup(g, list(self.groups[g]), self.nonces(g)) for g in shown]
        return FilteredTransaction(self.id, revealed, list(self.group_hashes))


class FilteredGroup(NamedTuple):
    """A revealed group, whole (a tuple: one is built per revealed group of every request)."""

    index: int
    components: list[bytes]
    nonces: list[bytes]


@dataclass(frozen=True)
class FilteredTransaction:
    id: bytes
    groups: list[FilteredGroup]
    group_hashes: list[bytes]

    def verify(self) -> None:
        """Corda's `FilteredTransaction.verify` for whole groups: the group hashes lead to the
        id, and every revealed group's components with their nonces lead to its group hash."""
        if not self.group_hashes:
            raise TearOffError("at least one component group hash is required")
        if merkle_root(self.group_hashes) != self.id:
            raise TearOffError("the group hashes do not lead to the transaction id")
        seen: set[int] = set()
        for g in self.groups:
            if g.index in seen:
                raise TearOffError(f"group {g.index} is revealed twice")
            seen.add(g.index)
            if g.index >= len(self.group_hashes):
                raise TearOffError(f"there is no group hash for group {g.index}")
            if not g.components or len(g.components) != len(g.nonces):
                raise TearOffError(f"group {g.index} needs one nonce per component, and a component")
            hashes = [_sha256(_sha256(n + c).digest()).digest() for n, c in zip(g.nonces, g.components, strict=True)]
            if merkle_root(hashes) != self.group_hashes[g.index]:
                raise TearOffError(f"the components of group {g.index} do not lead to its group hash")

    def components(self, group: int) -> list[bytes]:
        """Corda's `checkAllComponentsVisible` then the group's components: a group not revealed
        must be absent from the transaction (all-ones hash, or beyond the last group)."""
        for g in self.groups:
            if g.index == group:
                return g.components
        if group < len(self.group_hashes) and self.group_hashes[group] != ALL_ONES_HASH:
            raise TearOffError(f"group {group} ({GROUP_NAMES[group]}) exists but is not revealed")
        return []

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "group_hashes": [h.hex() for h in self.group_hashes],
            "groups": [
                {"index": g.index, "components": [b64e(c) for c in g.components], "nonces": [n.hex() for n in g.nonces]}
                for g in self.groups
            ],
        }

    @classmethod
    def from_json(cls, obj: Any) -> FilteredTransaction:
        """Shape checks only (bounded sizes, exact hash lengths); `verify` checks the content."""
        if not isinstance(obj, dict) or set(obj) != {"id", "group_hashes", "groups"}:
            raise TearOffError("a filtered transaction is {id, group_hashes, groups}")
        groups = obj["groups"]
        if not isinstance(groups, list):
            raise TearOffError(f"groups is a list of at most {MAX_GROUPS} groups")
        parts = []
        for g in groups[: MAX_GROUPS + 1]:  # from_parts refuses more
            if not isinstance(g, dict) or set(g) != {"index", "components", "nonces"}:
                raise TearOffError("a revealed group is {index, components, nonces}")
            parts.append((g["index"], g["components"], g["nonces"]))
        return cls.from_parts(obj["id"], obj["group_hashes"], parts)

    @classmethod
    def from_parts(cls, tx_id: Any, hashes: Any, groups: list[tuple[Any, Any, Any]]) -> FilteredTransaction:
        """From the wire's parts, `(index, base64 components, hex nonces)` per revealed group, as
        a parsed request holds them (no round trip through JSON objects). Shape checks only."""
        if not isinstance(hashes, list) or not 0 < len(hashes) <= MAX_GROUPS:
            raise TearOffError(f"group_hashes is a list of 1 to {MAX_GROUPS} hashes")
        if len(groups) > MAX_GROUPS:
            raise TearOffError(f"groups is a list of at most {MAX_GROUPS} groups")
        parsed = []
        total = 0
        for index, comps, nonces in groups:
            if type(index) is not int or not 0 <= index < MAX_GROUPS:
                raise TearOffError(f"a group index is an integer from 0 to {MAX_GROUPS - 1}")
            if not isinstance(comps, list) or not isinstance(nonces, list):
                raise TearOffError("components and nonces are lists")
            total += len(comps)
            if total > MAX_COMPONENTS:
                raise TearOffError(f"at most {MAX_COMPONENTS} components are revealed")
            parsed.append(FilteredGroup(index, [_b64(c) for c in comps], [_hash(n) for n in nonces]))
        return cls(_hash(tx_id), parsed, [_hash(h) for h in hashes])


def _hash(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise TearOffError("a hash is 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise TearOffError("a hash is 64 hex digits") from None


def _b64(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TearOffError("a component is base64 text")
    try:
        return binascii.a2b_base64(value, strict_mode=True)  # conclavium.encoding.b64d, one call less
    except ValueError:
        raise TearOffError("a component is standard base64") from None
