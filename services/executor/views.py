"""The core's views of the governance tables: who may sign, read and write, and the quorum.

Shared by every part of the machine (node messages, governance, applications through their
context), and cached where rebuilding would cost per entry: the key tables are rebuilt only when
governance or a node message changed them.
"""

from __future__ import annotations

from typing import Any

from conclavium import consortium, governance, rules
from conclavium.crypto.keys import PublicKey
from conclavium.tx import is_public_map

from .state import State
from .tables import CERTIFICATE, CONFIG, MAP_POLICIES, MEMBERS, NODES, SERVICE, USERS


class TableViews:
    state: State
    block_time: int
    _keys: dict[str, PublicKey] | None
    _node_keys: dict[str, PublicKey] | None
    _endorsed: list[tuple[str, PublicKey, str, int, int]] | None = None
    _signers: tuple[int, dict[str, str]] | None = None  # (block time, node -> member)

    @property
    def genesis_done(self) -> bool:
        return self.state.get(SERVICE, CERTIFICATE) is not None

    def service_certificate(self) -> str | None:
        return self.state.get(SERVICE, CERTIFICATE)

    def config(self, name: str, default: Any = None) -> Any:
        cfg = self.state.get(SERVICE, CONFIG) or {}
        return cfg.get(name, default)

    def participant_keys(self) -> dict[str, PublicKey]:
        """Members and users by key id; rebuilt only when those tables change."""
        if self._keys is None or {MEMBERS, USERS} & self.state.changed_maps:
            keys: dict[str, PublicKey] = {}
            for table in (MEMBERS, USERS):
                for kid, row in self.state.items(table):
                    if row.get("status", "Active") == "Active":
                        keys[kid] = PublicKey.load(row["public_key"])
            self._keys = keys
            self.state.changed_maps -= {MEMBERS, USERS}
        return self._keys

    def trusted_node_keys(self) -> dict[str, PublicKey]:
        """Nodes whose signatures count: trusted by governance and endorsed by the service."""
        if self._node_keys is None or NODES in self.state.changed_maps:
            keys = {}
            for nid, row in self.state.items(NODES):
                if row.get("status") == "Trusted" and row.get("cert"):
                    keys[nid] = PublicKey.load(row["signing_key"])
            self._node_keys = keys
            self.state.changed_maps.discard(NODES)
        return self._node_keys

    def _member_endorsed(self) -> list[tuple[str, PublicKey, str, int, int]]:
        """Trusted, service-endorsed nodes with an active member's endorsement: (node, key,
        member, not_before ms, not_after ms); rebuilt only when nodes or members change."""
        keys, people = self.trusted_node_keys(), self.participant_keys()
        built_for = self._endorsed_for
        if self._endorsed is None or built_for is None or built_for[0] is not keys or built_for[1] is not people:
            members = {k for k, r in self.state.items(MEMBERS) if r.get("status") == "Active"}
            out = []
            for nid, key in keys.items():
                row = self.state.get(NODES, nid) or {}
                member, validity = row.get("member"), row.get("endorsement_validity")
                if member in members and validity:
                    out.append((nid, key, member, validity[0] * 1000, validity[1] * 1000))
            self._endorsed, self._endorsed_for = out, (keys, people)
            self._signers = None
        return self._endorsed

    _endorsed_for: tuple[object, object] | None = None

    def signer_members(self, at_ms: int | None = None) -> dict[str, str]:
        """The nodes whose commit and clock signatures count at `at_ms` (default: the time of the
        block being applied, or of the last one), each with the member that endorsed it
        (docs/confidentiality.md, "Receipts that need k members")."""
        if self._node_commits():
            return {nid: nid for nid in self.trusted_node_keys()}  # each node its own "member"
        endorsed = self._member_endorsed()
        now = self.block_time if at_ms is None else at_ms
        cached = self._signers
        if cached is not None and cached[0] == now:
            return cached[1]
        result = {nid: member for nid, _, member, nb, na in endorsed if nb <= now < na}
        self._signers = (now, result)
        return result

    def _node_commits(self) -> bool:
        """Whether the ledger still runs the commit rule of rules versions before 3 (nodes only)."""
        return rules.active(self.state, SERVICE) < rules.MEMBER_COMMITS_FROM

    def signer_keys(self, at_ms: int | None = None) -> dict[str, PublicKey]:
        if self._node_commits():
            return self.trusted_node_keys()
        members = self.signer_members(at_ms)
        return {nid: key for nid, key, *_ in self._member_endorsed() if nid in members}

    def identity(self) -> consortium.Identity | None:
        doc = self.state.get(SERVICE, governance.model.CONSORTIUM_KEY)
        return consortium.load(doc) if doc is not None else None

    def member_threshold(self) -> int:
        """k: how many distinct members' nodes a commit needs (the identity's threshold)."""
        doc = self.state.get(SERVICE, governance.model.CONSORTIUM_KEY)
        if doc is None or self._node_commits():
            return 1
        return int(doc["identity"]["threshold"])

    def quorum_problem(self) -> str | None:
        """Why no block can commit now, if it cannot: fewer than k members or fewer than the node
        quorum of nodes can sign. Never papered over by a smaller quorum."""
        if self._node_commits():
            return None  # rules before 3 fell back to a majority, as they always did
        signers = self.signer_members()
        k, members = self.member_threshold(), len(set(signers.values()))
        if members < k:
            return f"nodes of {members} member(s) can sign, the member threshold is {k}"
        configured = self.state.get(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        if isinstance(configured, int) and configured > len(signers):
            return f"{len(signers)} node(s) can sign, the commit quorum is {configured}"
        return None

    def may_read(self, caller: str, map_name: str, row: dict[str, Any]) -> bool:
        """Public maps: anyone known; private entries: their writer, and whoever the map's policy
        (set by governance) lists as a reader."""
        if is_public_map(map_name) or row.get("writer") == caller:
            return True
        policy = self.state.get(MAP_POLICIES, map_name) or {}
        return caller in policy.get("readers", [])

    def may_write(self, caller: str, map_name: str, key: str | None = None) -> bool:
        """A policy's `writers` list says who may write a map (listed writers may overwrite each
        other's entries). Without one anyone known may write a public map or create a private
        entry, but only its writer may overwrite or delete an existing private entry: only the
        writer can read it, so another user must not replace it unseen."""
        policy = self.state.get(MAP_POLICIES, map_name)
        if policy is not None and policy.get("writers") is not None:
            return caller in policy["writers"]
        if key is None or is_public_map(map_name):
            return True
        row = self.state.get(map_name, key)
        return row is None or row.get("writer") == caller

    def quorum(self) -> int:
        return self.quorum_at(None)

    def quorum_at(self, at_ms: int | None) -> int:
        """The node quorum: more than half of the nodes that can sign, or the configured quorum
        when larger (it may exceed them: then nothing commits and `quorum_problem` says why)."""
        n = len(self.signer_members(at_ms))
        configured = self.state.get(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        majority = n // 2 + 1 if n else 0
        if self._node_commits():  # rules before 3: a configured quorum up to the nodes, as is
            return configured if isinstance(configured, int) and 0 < configured <= n else majority
        return max(configured, majority) if isinstance(configured, int) and configured > 0 else majority
