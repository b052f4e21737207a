"""TDX RTMRs through a replayed event log: parse, replay, compare with the quote, judge by policy.

No recorded TDX event log exists, so the log is built in the real CCEL format (tdx_test_log.py) and
the real v4 quote is re-signed under the Intel test PKI with the RTMRs that log replays to. The real
quotes themselves, under Intel's pinned root, show that a log which does not replay to their RTMRs
is refused; their RTMRs are judged by allow-lists in test_att_components.py.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from att_vectors import accepting, intel_vectors
from intel_test_pki import IntelTestPki
from tdx_test_log import RTMR1, RTMR2, BootChain, sha384

from conclavium.attestation import PolicyError, VerificationError, evaluate_policy, load_policy, verify_evidence
from conclavium.attestation.tdx_event_log import (
    EV_EFI_BOOT_SERVICES_APPLICATION,
    EV_NO_ACTION,
    Event,
    encode_event_log,
    parse_event_log,
)

V = next(v for v in intel_vectors() if v.name == "tdx/v4-dcapqvl")
CHAIN = BootChain()


@pytest.fixture
def pki(monkeypatch: pytest.MonkeyPatch) -> IntelTestPki:
    p = IntelTestPki()
    p.pin(monkeypatch)
    return p


def _claims(pki: IntelTestPki, chain: BootChain = CHAIN, log: bytes | None = None) -> Any:
    quote = pki.requote(V.quote, rtmrs=chain.rtmrs())
    return verify_evidence(
        "tdx",
        quote,
        collateral=pki.collateral(V.collateral, V.at),
        event_log=chain.log() if log is None else log,
        at=V.at,
    )


def _event_policy(claims: Any) -> dict[str, Any]:
    """Production policy pinning RTMR0 raw and RTMR1-3 through the log's events and components."""
    doc = accepting(claims)
    log = claims.details["event_log"]
    for i in (1, 2, 3):
        doc["tdx"].pop(f"rtmr{i}")
    doc["tdx"]["event_log"] = {
        "rtmr1": log["rtmr1"],
        "rtmr2": log["rtmr2"],
        "rtmr3": [],
        "kernel": [CHAIN.kernel_digest.hex()],
        "initrd": [CHAIN.initrd_digest.hex()],
        "cmdline": [CHAIN.cmdline_digest.hex()],
    }
    return doc


def failures(claims: Any, doc: dict[str, Any]) -> set[str]:
    result = evaluate_policy(claims, load_policy(doc), report_data=bytes.fromhex(claims.report_data)[:32], at=V.at)
    return {c for c, _ in result.failures}


def test_log_replays_to_the_quote_and_names_components(pki: IntelTestPki) -> None:
    claims = _claims(pki)
    log = claims.details["event_log"]
    body = claims.details["body"]
    assert [body[f"rtmr{i}"] for i in range(4)] == [r.hex() for r in CHAIN.rtmrs()]
    assert body["rtmr3"] == "00" * 48 and log["rtmr3"] == []
    assert log["components"] == {
        "kernel": [CHAIN.kernel_digest.hex()],
        "initrd": [CHAIN.initrd_digest.hex()],
        "cmdline": [CHAIN.cmdline_digest.hex()],
    }
    assert len(log["rtmr1"]) == 7 and log["events"] == len(CHAIN.events())
    assert failures(claims, accepting(claims)) == set(), "raw allow-lists of the replayed RTMRs accept"
    assert failures(claims, _event_policy(claims)) == set(), "event-log rules instead of raw RTMRs accept"


def test_event_policy_refuses_each_component(pki: IntelTestPki) -> None:
    claims = _claims(pki)
    doc = _event_policy(claims)

    def refused(change: Any, c: Any = claims) -> set[str]:
        d = copy.deepcopy(doc)
        change(d["tdx"]["event_log"])
        return failures(c, d)

    other = "ab" * 48
    assert refused(lambda e: e.update(kernel=[other])) == {"event_log_kernel"}
    assert refused(lambda e: e.update(initrd=[other])) == {"event_log_initrd"}
    assert refused(lambda e: e.update(cmdline=[other])) == {"event_log_cmdline"}
    assert refused(lambda e: e.update(rtmr1=e["rtmr1"][1:])) == {"rtmr1"}
    assert refused(lambda e: e.update(rtmr2=[])) == {"rtmr2"}
    # A different kernel boots: its RTMR1 event is not allowed and the kernel component differs.
    evil = BootChain(kernel=b"another kernel")
    evil_claims = _claims(pki, evil)
    assert refused(lambda e: None, evil_claims) == {"rtmr1", "event_log_kernel"}
    # An event the policy does not list is refused even when every named component matches.
    extra = BootChain(extra=[Event(RTMR2, 0x0D, sha384(b"grub_cmd: insmod evil"), b"grub_cmd: insmod evil\0")])
    assert refused(lambda e: None, _claims(pki, extra)) == {"rtmr2"}
    # Production: an RTMR covered by neither a raw list nor event rules is refused.
    assert refused(lambda e: e.pop("rtmr3")) == {"rtmr3"}


def test_event_policy_needs_a_log(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote, rtmrs=CHAIN.rtmrs())
    claims = verify_evidence("tdx", quote, collateral=pki.collateral(V.collateral, V.at), at=V.at)
    assert "event_log" not in claims.details
    doc = _event_policy(_claims(pki))
    assert failures(claims, doc) == {"event_log_missing"}
    # Raw RTMR allow-lists need no log.
    assert failures(claims, accepting(claims)) == set()


def test_log_that_does_not_replay_is_refused(pki: IntelTestPki) -> None:
    quote = pki.requote(V.quote, rtmrs=CHAIN.rtmrs())
    col = pki.collateral(V.collateral, V.at)
    events = CHAIN.events()
    kernel = max(i for i, e in enumerate(events) if e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
    for tampered in (
        [*events[:kernel], Event(RTMR1, EV_EFI_BOOT_SERVICES_APPLICATION, sha384(b"evil"), b""), *events[kernel + 1 :]],
        events[:-1],
        [*events, Event(RTMR2, 0x0D, sha384(b"late"), b"")],
    ):
        with pytest.raises(VerificationError) as e:
            verify_evidence("tdx", quote, collateral=col, event_log=encode_event_log(tampered), at=V.at)
        assert e.value.check == "event_log_replay", e.value.message
    # An EV_NO_ACTION event is logged but never extended: adding one changes nothing.
    quiet = [*events, Event(RTMR2, EV_NO_ACTION, b"\0" * 48, b"note")]
    verify_evidence("tdx", quote, collateral=col, event_log=encode_event_log(quiet), at=V.at)


def test_real_quotes_refuse_a_log_that_is_not_theirs() -> None:
    """Under Intel's pinned root: the recorded quote's RTMRs are not what the built log replays to."""
    with pytest.raises(VerificationError) as e:
        verify_evidence("tdx", V.quote, collateral=V.collateral, event_log=CHAIN.log(), at=V.at)
    assert e.value.check == "event_log_replay" and "RTMR0" in e.value.message
    sgx = next(v for v in intel_vectors() if v.name == "sgx/v3-dcapqvl")
    with pytest.raises(VerificationError) as e:
        verify_evidence("sgx", sgx.quote, collateral=sgx.collateral, event_log=CHAIN.log(), at=sgx.at)
    assert e.value.check == "event_log_platform"


def test_event_policy_format() -> None:
    base = {"environment": "development"}
    for bad in (
        {"tdx": {"event_log": []}},
        {"tdx": {"event_log": {"rtmr4": []}}},
        {"tdx": {"event_log": {"kernel": ["zz"]}}},
        {"tdx": {"event_log": {"kernel": ["ab" * 32]}}},
        {"tdx": {"event_log": {"rtmr1": "any"}}},
    ):
        with pytest.raises(PolicyError):
            load_policy({**base, **bad})


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "truncated"),
        (b"\0" * 32, "not the EV_NO_ACTION"),
        (CHAIN.log()[:200], "truncated"),
        (CHAIN.log()[:32] + b"Spec ID Event02\0" + CHAIN.log()[48:], "Spec ID Event03"),
        (encode_event_log([Event(5, 0x0D, b"\0" * 48, b"")]), "MR index 5"),
        (encode_event_log([Event(0, 0x0D, b"\0" * 48, b"")]), "MR index 0"),
        (b"\xff" * ((1 << 20) + 1), "exceeds"),
    ],
)
def test_malformed_logs(data: bytes, words: str) -> None:
    with pytest.raises(VerificationError) as e:
        parse_event_log(data)
    assert e.value.check == "event_log_format" and words in e.value.message, e.value.message
