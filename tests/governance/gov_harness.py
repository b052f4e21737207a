"""A small governance harness: members with keys, a table store, and a block clock."""

from __future__ import annotations

from typing import Any

from conclavium.crypto.keys import Algorithm, PrivateKey
from conclavium.governance import Context, MemoryTables, Outcome, apply, expire, genesis
from conclavium.governance.documents import make_ballot, make_proposal, make_withdrawal

T0 = 1_700_000_000
LEDGER = "gov-test"

_KEY_CACHE: dict[tuple[str, str], PrivateKey] = {}


def key(name: str, alg: Algorithm = "Ed25519") -> PrivateKey:
    """Keys are cached per name so tests stay fast; each name is a distinct identity."""
    if (name, alg) not in _KEY_CACHE:
        _KEY_CACHE[(name, alg)] = PrivateKey.generate(alg)
    return _KEY_CACHE[(name, alg)]


class Gov:
    """Drives one ledger's governance tables block by block; each new document is one second later."""

    def __init__(
        self,
        members: dict[str, int] | None = None,
        users: tuple[str, ...] = ("uma",),
        constitution: dict[str, Any] | None = None,
        algs: dict[str, Algorithm] | None = None,
        nodes: list[dict[str, Any]] | None = None,
    ) -> None:
        members = members or {"alice": 1, "bob": 1, "carol": 1}
        algs = algs or {}
        self.keys = {n: key(n, algs.get(n, "Ed25519")) for n in [*members, *users]}
        self.tables = MemoryTables()
        self.ledger = LEDGER
        self.height = 0
        self.now_s = T0
        genesis(
            self.tables,
            [{"name": n, "public_key": self.keys[n].public_key.pem, "weight": w} for n, w in members.items()],
            [{"name": n, "public_key": self.keys[n].public_key.pem} for n in users],
            constitution,
            nodes,
        )

    def add_key(self, name: str, alg: Algorithm = "Ed25519") -> PrivateKey:
        self.keys[name] = key(name, alg)
        return self.keys[name]

    def id(self, name: str) -> str:
        return self.keys[name].key_id

    def pem(self, name: str) -> str:
        return self.keys[name].public_key.pem

    @property
    def ctx(self) -> Context:
        return Context(height=self.height, timestamp_ms=self.now_s * 1000, ledger=self.ledger)

    def submit(self, document: bytes) -> Outcome:
        """One block holding one governance document: expire first, then apply."""
        self.height += 1
        expire(self.tables, self.ctx)
        return apply(self.tables, document, self.ctx)

    def propose(self, name: str, actions: list[dict[str, Any]]) -> Outcome:
        self.now_s += 1
        return self.submit(make_proposal(actions, self.keys[name], self.now_s, ledger=self.ledger))

    def vote(self, name: str, proposal_id: str, approve: bool = True) -> Outcome:
        self.now_s += 1
        return self.submit(make_ballot(proposal_id, approve, self.keys[name], self.now_s, ledger=self.ledger))

    def withdraw(self, name: str, proposal_id: str) -> Outcome:
        self.now_s += 1
        return self.submit(make_withdrawal(proposal_id, self.keys[name], self.now_s, ledger=self.ledger))

    def pass_(self, actions: list[dict[str, Any]], proposer: str = "alice", voters: tuple[str, ...] = ()) -> Outcome:
        """Propose and approve with `voters` (default: every active member) until settled."""
        out = self.propose(proposer, actions)
        assert out.ok, out.reason
        pid = out.proposal_id
        assert pid is not None
        if not voters:
            voters = tuple(
                n for n in self.keys
                if (self.tables.get("public:gov.members", self.id(n)) or {}).get("status") == "Active"
            )
        for voter in voters:
            out = self.vote(voter, pid)
            assert out.ok, out.reason
            if out.proposal_state != "Open":
                return out
        return out

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        found = self.tables.get("public:gov.proposals", proposal_id)
        assert found is not None
        return found
