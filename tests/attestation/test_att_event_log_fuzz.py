"""Fuzz the TDX event-log parser (hypothesis): the log comes from the joining host, so any bytes.

`parse_event_log` and `check_against_quote` meet random bytes, random event lists encoded in the
CCEL layout, and byte mutations of the realistic test log; they may only return or raise
`VerificationError`. Encoding a parsed log again gives back its measured events, and replay is
what the events say.

Time budget (marker `fuzz`, deselect with `-m "not fuzz"`): 300 examples per target, a few
seconds in all on one core; CONCLAVIUM_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tdx_test_log import BootChain

from conclavium.attestation import VerificationError
from conclavium.attestation.tdx_event_log import (
    EV_NO_ACTION,
    Event,
    check_against_quote,
    encode_event_log,
    parse_event_log,
    replay,
)

pytestmark = pytest.mark.fuzz
FUZZ_SCALE = int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=300 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
LOG = BootChain().log(pad_to=0)
RTMRS = BootChain().rtmrs()

events = st.builds(
    Event,
    mr_index=st.integers(1, 4),
    event_type=st.sampled_from([EV_NO_ACTION, 0x4, 0x6, 0xD, 0x80000001, 0x80000003, 0x80000007])
    | st.integers(0, 2**32 - 1),
    digest=st.binary(min_size=48, max_size=48),
    data=st.binary(max_size=64),
)


def _judged(data: bytes) -> None:
    try:
        parse_event_log(data)
        check_against_quote(data, RTMRS)
    except VerificationError:
        pass


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes(data: bytes) -> None:
    _judged(data)


@FUZZ
@given(st.lists(events, max_size=20))
def test_encoded_events_round_trip(evs: list[Event]) -> None:
    parsed = parse_event_log(encode_event_log(evs))
    assert parsed == evs
    expected = [b"\0" * 48] * 4
    for e in evs:
        if e.event_type != EV_NO_ACTION:
            expected[e.mr_index - 1] = hashlib.sha384(expected[e.mr_index - 1] + e.digest).digest()
    assert replay(parsed) == expected


@FUZZ
@given(st.data())
def test_mutated_real_format_log(data: st.DataObject) -> None:
    raw = bytearray(LOG)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos : pos + data.draw(st.integers(1, 64))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    _judged(bytes(raw))
