"""Same documents at the same heights and times give identical tables on independent executors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from gov_harness import Gov, key

from conclavium.governance import Context, MemoryTables, Outcome, apply, expire, genesis


class RecordingGov(Gov):
    def __init__(self, **kw: Any) -> None:
        self.log: list[tuple[bytes, Context]] = []
        super().__init__(**kw)

    def submit(self, document: bytes) -> Outcome:
        out = super().submit(document)
        self.log.append((document, self.ctx))
        return out


class ReversedTables(MemoryTables):
    """A store that iterates maps in a different order: the engine must not care."""

    def items(self, map: str) -> Iterator[tuple[str, Any]]:
        return iter(list(super().items(map))[::-1])


def _genesis(tables: MemoryTables, g: Gov, members: dict[str, int]) -> None:
    genesis(
        tables,
        [{"name": n, "public_key": g.pem(n), "weight": w} for n, w in members.items()],
        [{"name": "uma", "public_key": g.pem("uma")}],
        {"proposal_ttl_s": 120, "rules": {"default": {"accept": {"rule": "weighted", "num": 1, "den": 2}},
                                         "set_constitution": {"accept": {"rule": "unanimity"}}}},
    )


def test_three_executors_reach_identical_tables() -> None:
    members = {"alice": 3, "bob": 2, "carol": 1}
    g = RecordingGov(members=members, algs={"bob": "ES256", "carol": "ES384"}, constitution={
        "proposal_ttl_s": 120, "rules": {"default": {"accept": {"rule": "weighted", "num": 1, "den": 2}},
                                         "set_constitution": {"accept": {"rule": "unanimity"}}}})
    g.add_key("dave", "ES256")
    p1 = g.propose("bob", [{"name": "set_member", "args": {"name": "dave", "public_key": g.pem("dave")}},
                           {"name": "set_user", "args": {"name": "carl", "public_key": key("carl").public_key.pem}}])
    g.vote("carol", p1.proposal_id, False)
    g.vote("alice", p1.proposal_id)
    p2 = g.propose("dave", [{"name": "open_service", "args": {}}])
    g.vote("bob", p2.proposal_id, True)   # same ballot twice: the second is Invalid
    g.submit(g.log[-1][0])
    p3 = g.propose("carol", [{"name": "rotate_ledger_secret", "args": {}}])
    g.withdraw("carol", p3.proposal_id)
    g.vote("alice", p2.proposal_id)
    assert g.proposal(p2.proposal_id)["state"] == "Accepted"
    p4 = g.propose("alice", [{"name": "set_constitution", "args": {"constitution": {
        "rules": {"default": {"accept": {"rule": "majority"}}}}}}])
    g.now_s += 500  # p4 expires at the next block, whose ballot is then refused
    assert not g.vote("bob", p4.proposal_id).ok

    replicas = [MemoryTables(), MemoryTables(), ReversedTables()]
    results = []
    for tables in replicas:
        _genesis(tables, g, members)
        outcomes = []
        for document, ctx in g.log:
            expire(tables, ctx)
            out = apply(tables, document, ctx)
            outcomes.append((out.status, out.reason, out.proposal_id, out.proposal_state, out.effects))
        results.append(outcomes)
    assert results[0] == results[1] == results[2]
    assert [r[0] for r in results[0]].count("Invalid") == 2
    reference = g.tables.canonical()
    assert all(t.canonical() == reference for t in replicas)
    states = sorted(p["state"] for _, p in g.tables.items("public:gov.proposals"))
    assert states == ["Accepted", "Accepted", "Expired", "Withdrawn"]
