"""The history checker accepts a valid register history and rejects each seeded anomaly: a lost
write, a stale read, a duplicate commit, and the other ways a ledger could break its promise."""

from __future__ import annotations

from pathlib import Path

import pytest
from history import FAIL, INFO, INVOKE, OK, READ, WRITE, Commit, Event, HistoryError, check, load, save


class Seed:
    """Builds a history with explicit times, and the ledger's commits next to it."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.commits: list[Commit] = []

    def write(
        self,
        p: int,
        key: str,
        value: int,
        start: float,
        end: float | None,
        outcome: str = OK,
        at: tuple[int, int] | None = None,
    ) -> str:
        tx = f"tx-{key}-{value}"
        self.events.append(Event(p, INVOKE, WRITE, key, value, start, tx=tx))
        if end is not None:
            height = at[0] if at and outcome == OK else None
            self.events.append(Event(p, outcome, WRITE, key, value, end, height=height))
        if at is not None:
            self.commits.append(Commit(tx, key, value, *at))
        return tx

    def read(self, p: int, key: str, value: int | None, start: float, end: float, height: int | None = None) -> None:
        self.events.append(Event(p, INVOKE, READ, key, None, start))
        self.events.append(Event(p, OK, READ, key, value, end, height=height))

    def kinds(self) -> list[str]:
        self.events.sort(key=lambda e: e.time)
        return sorted({a.kind for a in check(self.events, self.commits)})


def valid() -> Seed:
    s = Seed()
    s.read(0, "r", None, 0.0, 0.5, height=1)
    s.write(0, "r", 1, 1.0, 3.0, at=(5, 0))
    s.read(1, "r", None, 1.1, 1.2, height=4)  # concurrent with the write, before its commit
    s.read(1, "r", 1, 2.0, 2.5, height=5)  # concurrent, after its commit: either is fine
    s.write(1, "r", 2, 4.0, 9.0, INFO, at=(7, 3))  # an unknown outcome that committed
    s.write(2, "r", 3, 4.5, 6.0, FAIL)  # refused: never committed
    s.read(0, "r", 1, 5.0, 5.5, height=6)  # write 2 not yet known to be committed
    s.write(2, "r", 4, 7.0, 8.0, INFO)  # an unknown outcome that did not commit
    s.read(0, "r", 2, 10.0, 10.5, height=7)
    s.read(1, "r", 2, 11.0, 11.5, height=9)
    s.write(0, "s", 10, 12.0, 13.0, at=(8, 0))
    s.read(0, "s", 10, 14.0, 15.0, height=8)
    return s


def test_valid_history_has_no_anomalies() -> None:
    assert valid().kinds() == []


def test_lost_write_is_rejected() -> None:
    s = valid()
    s.write(1, "s", 11, 20.0, 21.0, at=(12, 0))
    s.commits.pop()  # the client was told Committed; the ledger does not hold it
    assert s.kinds() == ["lost_write"]


def test_stale_read_is_rejected() -> None:
    s = valid()
    s.write(2, "t", 1, 20.0, 21.0, at=(12, 0))
    s.read(1, "t", None, 22.0, 23.0)  # another client's write was acknowledged before this read began
    assert s.kinds() == ["stale_read"]


def test_read_your_writes_is_rejected() -> None:
    s = valid()
    s.write(2, "t", 1, 20.0, 21.0, at=(12, 0))
    s.write(2, "t", 2, 22.0, 23.0, at=(13, 0))
    s.read(2, "t", 1, 24.0, 25.0)
    assert s.kinds() == ["read_your_writes"]


def test_duplicate_commit_is_rejected() -> None:
    s = valid()
    tx = s.write(1, "t", 1, 20.0, 21.0, at=(12, 0))
    s.commits.append(Commit(tx, "t", 1, 14, 2))  # the same transaction applied twice
    assert s.kinds() == ["duplicate"]


def test_one_value_committed_by_two_transactions_is_rejected() -> None:
    s = valid()
    s.write(1, "t", 1, 20.0, 21.0, at=(12, 0))
    s.commits.append(Commit("tx-resent", "t", 1, 14, 2))  # the client's write re-signed and committed again
    assert "duplicate" in s.kinds()


def test_failed_write_that_is_committed_is_rejected() -> None:
    s = valid()
    s.write(1, "t", 1, 20.0, 21.0, FAIL, at=(12, 0))
    assert s.kinds() == ["failed_write_committed"]


def test_future_read_is_rejected() -> None:
    s = valid()
    s.read(1, "t", 1, 20.0, 20.5)  # a value whose write had not even been invoked
    s.write(2, "t", 1, 21.0, 22.0, at=(12, 0))
    assert s.kinds() == ["future_read"]


def test_uncommitted_read_is_rejected() -> None:
    s = valid()
    s.write(2, "t", 1, 20.0, 21.0, INFO)
    s.read(1, "t", 1, 22.0, 23.0)  # a value the ledger never committed
    assert s.kinds() == ["uncommitted_read"]


def test_write_order_against_real_time_is_rejected() -> None:
    s = valid()
    s.write(1, "t", 1, 20.0, 21.0, at=(13, 0))  # acknowledged first ...
    s.write(2, "t", 2, 22.0, 23.0, at=(12, 0))  # ... yet ordered after a write invoked later
    assert s.kinds() == ["write_order"]


def test_nonmonotonic_reads_are_rejected() -> None:
    s = valid()
    s.write(2, "t", 1, 20.0, 40.0, at=(12, 0))
    s.write(0, "t", 2, 20.0, 40.0, at=(13, 0))
    s.read(1, "t", 2, 25.0, 26.0)
    s.read(3, "t", 1, 27.0, 28.0)  # older than what a finished read already returned
    assert s.kinds() == ["nonmonotonic_read"]


def test_read_that_disagrees_with_its_height_is_rejected() -> None:
    s = valid()
    s.read(1, "s", None, 16.0, 17.0, height=8)  # signed at 8, where s=10 was already committed
    assert "wrong_state" in s.kinds()


def test_phantom_write_is_rejected() -> None:
    s = valid()
    s.commits.append(Commit("tx-nobody", "t", 99, 12, 0))
    assert s.kinds() == ["phantom_write"]


def test_wrong_commit_height_is_rejected() -> None:
    s = valid()
    s.events.append(Event(1, INVOKE, WRITE, "t", 1, 20.0, tx="tx-t-1"))
    s.events.append(Event(1, OK, WRITE, "t", 1, 21.0, height=11))
    s.commits.append(Commit("tx-t-1", "t", 1, 12, 0))
    assert s.kinds() == ["wrong_height"]


@pytest.mark.parametrize(
    "events",
    [
        [Event(0, INVOKE, READ, "r", None, 0.0), Event(0, INVOKE, READ, "r", None, 1.0)],
        [Event(0, OK, READ, "r", 1, 0.0)],
        [Event(0, INVOKE, WRITE, "r", 1, 0.0, tx="a"), Event(1, INVOKE, WRITE, "r", 1, 0.1, tx="b")],
    ],
    ids=["two-open", "completion-without-invocation", "value-written-twice"],
)
def test_malformed_history_is_refused(events: list[Event]) -> None:
    with pytest.raises(HistoryError):
        check(events, [])


def test_saved_history_checks_the_same(tmp_path: Path) -> None:
    s = valid()
    s.write(2, "t", 1, 20.0, 21.0, at=(12, 0))
    s.read(1, "t", None, 22.0, 23.0)
    s.kinds()
    save(tmp_path / "h.json", s.events, s.commits)
    events, commits = load(tmp_path / "h.json")
    assert [a.kind for a in check(events, commits)] == ["stale_read"]
