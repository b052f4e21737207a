"""Recovery node messages in execution: share sets, opening a recovery, completing it.

Part of `LedgerMachine` (a mixin, like `node_entries.py`). The cryptography is in
`conclavium/recovery.py`, the members' `recovery_share` documents in
`conclavium/governance/recovery.py`, the recovering executor's side in `recovery.py` here:

- `RecoveryShares` (from a trusted node): the share set in force, recorded only when it matches
  the ledger exactly (holders and their keys, threshold, every generation);
- `RecoveryOpen` (self-signed by a new node, with evidence the node policy accepts): the node
  that asks the members for their shares of the set in force; it replaces an open recovery that
  holds no share yet (so an opening nobody answers does not block a real recovery), never one
  that does;
- `Recovered` (from that node): once the ledger recorded at least `threshold` members' shares
  for it and its node certificate is signed by the service key (which only the reconstructed
  secrets hold), every lost node is retired and this one is trusted.

None of them is checked against the ledger's time: when every executor is lost, no trusted clock
moves the ledger's time, and each is bound to what it answers instead (the set in force, the open
recovery, a node never seen), so a copy cannot execute twice.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from conclavium import node_messages
from conclavium.block import Entry
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.governance import recovery as gov_recovery
from conclavium.governance.actions import current_node_policy, recovery_holders
from conclavium.governance.model import COMMIT_QUORUM_KEY, NODE_RETIRED, NODE_TRUSTED, RECOVERY, RECOVERY_THRESHOLD_KEY
from conclavium.identity import CertificateError, load_cert, verify_node_certificate
from conclavium.recovery import set_id
from conclavium.tx import TxError

from . import ledger_clock
from .outcome import BlockOutcome
from .state import write_digest
from .tables import CERTIFICATE, NODES, SERVICE, TX_KEYS
from .views import TableViews


def share_set_wanted(state: Any) -> tuple[int, list[str], dict[str, list[str]]] | None:
    """(threshold, generation ids, holder id -> [public key, encryption key]) a share set must
    match now; None when no threshold is set or too few members hold an encryption key."""
    threshold = state.get(SERVICE, RECOVERY_THRESHOLD_KEY)
    holders = recovery_holders(state)
    if not isinstance(threshold, int) or not 1 <= threshold <= len(holders):
        return None
    gens = [k["id"] for k in state.get(SERVICE, TX_KEYS) or []]
    return threshold, gens, {m: [row["public_key"], row["encryption_key"]] for m, row in sorted(holders.items())}


def share_set_of(recorded: dict[str, Any] | None) -> tuple[int, list[str], dict[str, list[str]]] | None:
    if recorded is None:
        return None
    members = {m: [r["public_key"], r["encryption_key"]] for m, r in sorted(recorded["members"].items())}
    return recorded["threshold"], list(recorded["generations"]), members


class RecoveryEntries(TableViews):
    """Execution of the recovery node messages, mixed into `LedgerMachine`."""

    ledger: str
    block_time: int

    def _recovery_shares(self, msg: node_messages.RecoveryShares) -> bytes:
        wanted = share_set_wanted(self.state)
        if wanted is None:
            raise TxError("no_recovery_threshold", "no recovery threshold, or fewer members with an encryption key")
        threshold, gens, holders = wanted
        if msg.threshold != threshold:
            raise TxError("stale_share_set", f"the recovery threshold is {threshold}, not {msg.threshold}")
        if msg.generations != gens:
            raise TxError("stale_share_set", "the share set does not hold exactly the ledger's generations")
        if sorted(msg.shares) != sorted(holders):
            raise TxError("stale_share_set", "the share set is not for exactly the members holding encryption keys")
        try:
            wrapped = base64.b64decode(msg.wrapped, validate=True)
        except (binascii.Error, ValueError):
            raise TxError("invalid_node_message", "wrapped secrets are not base64") from None
        if set_id(wrapped) != msg.id:
            raise TxError("invalid_node_message", "the set id is not the SHA-256 of the wrapped secrets")
        members = {}
        for member, share in msg.shares.items():
            if sorted(share) != ["box", "digest", "public_key"] or not all(isinstance(v, str) for v in share.values()):
                raise TxError("invalid_node_message", "each share is {box, digest, public_key}")
            pem, enc = holders[member]
            if share["public_key"] != pem:
                raise TxError("stale_share_set", f"member {member[:16]}'s public key is not the one in the ledger")
            members[member] = {"encryption_key": enc, **share}
        self.state.begin()
        self.state.put(
            RECOVERY,
            gov_recovery.SHARE_SET_KEY,
            {
                "id": msg.id,
                "threshold": threshold,
                "generations": gens,
                "members": members,
                "wrapped": msg.wrapped,
                "sender": msg.sender,
                "height": self.tip.height + 1,
            },
        )
        return write_digest(self.state.commit())

    def _recovery_open(self, msg: node_messages.RecoveryOpen, bound: list[bytes]) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        current = gov_recovery.share_set(self.state)
        if current is None:
            raise TxError("no_share_set", "the ledger holds no recovery share set")
        if msg.set != current["id"]:
            raise TxError("stale_share_set", "the recovery names another share set than the one in force")
        if self.state.get(NODES, msg.node.id) is not None:
            raise TxError("already_joined", "a recovering node must be a new node")
        opened = gov_recovery.open_recovery(self.state)
        if opened is not None and opened["shares"]:
            raise TxError("recovery_open", f"node {opened['node'][:16]}'s open recovery holds members' shares")
        claims = self._check_evidence(msg.node, bound, current_node_policy(self.state), self.block_time)
        self.state.begin()
        self.state.put(
            RECOVERY,
            gov_recovery.OPEN_KEY,
            {
                "node": msg.node.id,
                "set": msg.set,
                "height": self.tip.height + 1,
                "ts": msg.ts,
                "info": {"name": msg.node.name, **self._governance_node(msg.node, claims)},
                "fields": self._node_fields(msg.node, claims, None),
                "shares": {},
            },
        )
        return write_digest(self.state.commit())

    def _recovered(self, msg: node_messages.Recovered, entry: Entry, out: BlockOutcome) -> bytes:
        opened = gov_recovery.open_recovery(self.state)
        if opened is None:
            raise TxError("no_recovery", "no recovery is open")
        fields = opened["fields"]
        try:
            key = PublicKey.load(fields["signing_key"])
        except KeyError_:
            raise TxError("invalid_node_message", "the recovering node's key does not load") from None
        if msg.sender != opened["node"] or not key.verify(entry.signature, entry.data):
            raise TxError("bad_signature", "only the node that opened the recovery completes it")
        if msg.set != opened["set"]:
            raise TxError("stale_share_set", "the recovery was opened for another share set")
        threshold = (gov_recovery.share_set(self.state) or {}).get("threshold", 0)
        used = set(msg.members)
        if len(used) != len(msg.members) or not used <= set(opened["shares"]) or len(used) < threshold:
            raise TxError(
                "too_few_shares",
                f"the ledger recorded {len(opened['shares'])} share(s) for this recovery; it needs {threshold} "
                "distinct members whose shares it recorded",
            )
        try:
            endorsed = verify_node_certificate(msg.cert, load_cert(self.state.get(SERVICE, CERTIFICATE)))
        except CertificateError as e:
            raise TxError("bad_certificate", str(e)) from None
        if endorsed.spki != key.spki:
            raise TxError("bad_certificate", "the certificate is for another key")
        self.state.begin()
        retired = []
        for nid, row in list(self.state.items(NODES)):
            if row.get("status") == NODE_TRUSTED:
                self.state.put(NODES, nid, {**row, "status": NODE_RETIRED, "retired_height": self.tip.height + 1})
                retired.append(nid)
        info = dict(opened["info"])
        info.pop("node_id", None)
        info.pop("name", None)
        self.state.put(
            NODES,
            msg.sender,
            {
                "status": NODE_TRUSTED,
                "host_data": None,
                **info,
                "trusted_height": self.tip.height + 1,
                **fields,
                "cert": msg.cert,
            },
        )
        # The configured quorum counted the lost nodes; a majority of the nodes trusted from now.
        self.state.delete(SERVICE, COMMIT_QUORUM_KEY)
        self.state.delete(RECOVERY, gov_recovery.OPEN_KEY)
        self.state.put(
            RECOVERY,
            gov_recovery.LAST_KEY,
            {
                "node": msg.sender,
                "set": msg.set,
                "members": sorted(used),
                "retired": sorted(retired),
                "height": self.tip.height + 1,
                "opened_height": opened["height"],
            },
        )
        ledger_clock.seed(self.state, msg.sender, msg.ts)
        out.recovered = True
        return write_digest(self.state.commit())
