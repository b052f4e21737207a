"""The core's views of the governance tables: who may sign, read and write, and the quorum.

Shared by every part of the machine (node messages, governance, applications through their
context), and cached where rebuilding would cost per entry: the key tables are rebuilt only when
governance or a node message changed them.
"""

from __future__ import annotations

from typing import Any

from conclavium import governance
from conclavium.crypto.keys import PublicKey
from conclavium.tx import is_public_map

from .state import State
from .tables import CERTIFICATE, CONFIG, MAP_POLICIES, MEMBERS, NODES, SERVICE, USERS


class TableViews:
    state: State
    _keys: dict[str, PublicKey] | None
    _node_keys: dict[str, PublicKey] | None

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
        n = len(self.trusted_node_keys())
        configured = self.state.get(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        if isinstance(configured, int) and 0 < configured <= n:
            return configured
        return n // 2 + 1 if n else 0
