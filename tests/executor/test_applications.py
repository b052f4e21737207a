"""Applications behind the interface: a counter application plugged in by the test (no change to
the core), applications governed by the ledger, and the versioned rule set."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from machine_harness import LEDGER, Chain, bootstrap, new_machine

from conclavium import rules
from conclavium.apps import app_entry
from conclavium.block import Entry, Kind
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import canonical_json, loads
from conclavium.governance import documents
from conclavium.tx import TxError
from services.executor.apps import Application, Context, KeyValueApp, Namespaces
from services.executor.apps.base import Verdict
from services.executor.ledger_machine import SERVICE, LedgerMachine, UnsupportedRules
from services.executor.state import write_digest
from services.executor.verifier import BatchVerifier

COUNTERS = "public:counter"


class CounterApp(Application):
    """Adds `by` to a named counter; the payload is canonical JSON signed by a member or user."""

    name = "counter"
    namespaces = Namespaces(public=(COUNTERS,), private=())

    def execute(self, ctx: Context, entry: Entry, pre: Verdict) -> bytes:
        try:
            body = loads(entry.data)
            sender, counter, by = body["sender"], body["counter"], body["by"]
        except (ValueError, KeyError, TypeError):
            raise TxError("invalid_counter", "the payload is not a counter increment") from None
        key = ctx.participant_keys().get(sender)
        if key is None or not key.verify(entry.signature, entry.data):
            raise TxError("bad_signature", "the increment is not signed by a member or user")
        ctx.entry_dated(ctx.block_time)
        ctx.state.begin()
        ctx.state.put(COUNTERS, counter, (ctx.state.get(COUNTERS, counter) or 0) + by)
        return write_digest(ctx.state.commit())


def increment(who: PrivateKey, counter: str, by: int) -> Entry:
    payload = canonical_json({"sender": who.key_id, "counter": counter, "by": by})
    return app_entry("counter", payload, who.sign(payload))


def machine(chain: Chain, *, counter: bool = True, versions: frozenset[int] = rules.IMPLEMENTED) -> LedgerMachine:
    apps: list[Application] = [KeyValueApp(), CounterApp()] if counter else [KeyValueApp()]
    return LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=apps, rules_versions=versions)


async def _all(machines: list[LedgerMachine], block: tuple[bytes, int]) -> list[Any]:
    return [await m.apply(*block) for m in machines]


def _governance(chain: Chain, actions: list[dict[str, Any]], n: int) -> list[Entry]:
    at = chain.ts // 1000 + n
    doc = documents.make_proposal(actions, chain.member, at, ledger=LEDGER)
    ballot = documents.make_ballot(hashlib.sha256(doc).hexdigest(), True, chain.member, at, ledger=LEDGER)
    return [Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")]


async def _ledger(n: int = 3, **kw: Any) -> tuple[Chain, list[LedgerMachine]]:
    """A ledger started under rules version 1 (as ledgers written before version 2 were)."""
    chain = Chain()
    machines = [machine(chain, **kw) for _ in range(n)]
    first = machines[0]
    await bootstrap(chain, first, config={"rules_version": 1})
    # The others replay the same chain from its snapshot: same state, same tip.
    for m in machines[1:]:
        m.restore(first.snapshot())
    return chain, machines


async def test_an_entry_for_an_application_the_ledger_does_not_run_is_invalid() -> None:
    chain, (m,) = await _ledger(1)
    unknown = app_entry("nosuch", b"{}", b"")
    garbled = Entry(Kind.APP, b"\xffno name", b"")
    counter = increment(chain.user, "c", 1)  # implemented here, but the ledger does not run it
    _, out = await m.apply(*chain.block([unknown, garbled, counter, chain.tx("fine", 1)]))
    assert [code for _, code, _ in out.invalid] == ["unknown_application"] * 3
    assert "'nosuch'" in out.invalid[0][2] and "'counter'" in out.invalid[2][2]
    assert m.state.get("public:t", "fine")["value"] == 1 and m.state.get(COUNTERS, "c") is None


async def test_applications_are_governed_only_from_rules_version_2() -> None:
    chain, (m,) = await _ledger(1)
    _, out = await m.apply(*chain.block(_governance(chain, [_apps("kv", "counter")], 1)))
    assert [code for _, code, _ in out.invalid][-1:] and m.state.get(SERVICE, rules.APPLICATIONS_KEY) is None
    assert "from rules version 2" in " ".join(msg for _, _, msg in out.invalid)


def _apps(*names: str) -> dict[str, Any]:
    return {"name": "set_applications", "args": {"applications": list(names)}}


def _version(version: int, height: int) -> dict[str, Any]:
    return {"name": "set_rules_version", "args": {"version": version, "activation_height": height}}


async def _upgraded(machines: list[LedgerMachine], chain: Chain) -> None:
    """Rules version 2 from two blocks on, then the counter application enabled."""
    at = chain.height + 3
    await _all(machines, chain.block(_governance(chain, [_version(2, at)], 1)))
    assert all(m.rules_version() == 1 for m in machines)
    await _all(machines, chain.block([chain.tx("before", 1)]))
    assert all(m.rules_version() == 1 for m in machines)
    await _all(machines, chain.block([]))
    assert chain.height == at and all(m.rules_version() == 2 for m in machines)
    await _all(machines, chain.block(_governance(chain, [_apps("counter", "kv")], 2)))


async def test_a_block_mixing_both_applications_gives_the_same_root_on_three_executors() -> None:
    chain, machines = await _ledger(3)
    await _upgraded(machines, chain)
    block = chain.block(
        [increment(chain.user, "c", 2), chain.tx("k", 1), increment(chain.member, "c", 3), chain.tx("k2", 2)]
    )
    outs = await _all(machines, block)
    assert all(not out.invalid for _, out in outs)
    roots = {m.uncommitted[chain.height].root for m in machines}
    assert len(roots) == 1 and len(machines[0].uncommitted[chain.height].leaves) == 4
    assert all(m.state.get(COUNTERS, "c") == 5 for m in machines)
    assert len({m.snapshot() for m in machines}) == 1


async def test_a_rules_change_stops_an_older_executor_at_its_activation_height() -> None:
    chain, (new, old) = await _ledger(2, versions=rules.IMPLEMENTED)
    old.rules_versions = frozenset({1})
    at = chain.height + 3
    await _all([new, old], chain.block(_governance(chain, [_version(2, at)], 1)))
    await _all([new, old], chain.block([chain.tx("still-1", 1)]))
    before = old.snapshot()
    block = chain.block([chain.tx("under-2", 2)])
    await new.apply(*block)
    with pytest.raises(UnsupportedRules, match="rules version 2 from height"):
        await old.apply(*block)
    assert old.snapshot() == before, "the older executor changed nothing: it computed no other root"
    assert new.rules_version() == 2 and old.rules_version() == 1
    # Upgraded (it now implements version 2), it applies the same block to the same root.
    old.rules_versions = rules.IMPLEMENTED
    await old.apply(*block)
    assert old.uncommitted[chain.height].root == new.uncommitted[chain.height].root


async def test_an_executor_without_an_application_the_ledger_runs_stops_instead_of_forking() -> None:
    chain, machines = await _ledger(2)
    lacking = machine(chain, counter=False)
    lacking.restore(machines[0].snapshot())
    at = chain.height + 3
    everyone = [*machines, lacking]
    await _all(everyone, chain.block(_governance(chain, [_version(2, at)], 1)))
    await _all(everyone, chain.block([]))
    await _all(everyone, chain.block([]))
    enable = chain.block([*_governance(chain, [_apps("counter", "kv")], 2), increment(chain.user, "c", 1)])
    before = lacking.snapshot()
    with pytest.raises(UnsupportedRules, match="counter"):
        await lacking.apply(*enable)
    assert lacking.snapshot() == before
    await _all(machines, enable)
    assert all(m.state.get(COUNTERS, "c") == 1 for m in machines)


async def test_rules_version_proposals_are_checked() -> None:
    chain, (m,) = await _ledger(1)
    _, out = await m.apply(*chain.block(_governance(chain, [_version(1, chain.height + 5)], 1)))
    assert any("not above the active version" in msg for _, _, msg in out.invalid)
    _, out = await m.apply(*chain.block(_governance(chain, [_version(2, 1)], 2)))
    assert any("not above the current height" in msg for _, _, msg in out.invalid)


async def test_a_new_ledger_runs_the_latest_rules_and_its_members_choose_its_applications() -> None:
    chain = Chain()
    m = machine(chain)
    await bootstrap(chain, m)
    assert m.rules_version() == rules.LATEST
    _, out = await m.apply(*chain.block([increment(chain.user, "c", 1)]))
    assert [code for _, code, _ in out.invalid] == ["unknown_application"]
    await m.apply(*chain.block(_governance(chain, [_apps("counter", "kv")], 1)))
    _, out = await m.apply(*chain.block([increment(chain.user, "c", 1), chain.tx("k", 1)]))
    assert not out.invalid and m.state.get(COUNTERS, "c") == 1
    await m.apply(*chain.block(_governance(chain, [_apps("counter")], 2)))
    _, out = await m.apply(*chain.block([chain.tx("k2", 1)]))
    assert [code for _, code, _ in out.invalid] == ["unknown_application"], "the key-value app is governed too"


def test_the_harness_machine_implements_the_built_in_applications() -> None:
    assert set(new_machine(Chain()).apps) == {"kv", "notary", "eth", "sawtooth", "quorum"}
