"""Which ConfigMap lines become allow_measurement actions (pure; the proposal flow is in test_operator.py)."""

from __future__ import annotations

from conclavium_operator.measurements import digest, hardware_platform, missing_actions


def test_only_lines_the_ledger_does_not_allow_for_the_platform_are_proposed() -> None:
    a, b, c = "aa" * 48, "bb" * 48, "cc" * 48
    allowed = {a: {"platform": "snp", "host_data": None}, b: {"platform": "tdx", "host_data": None}, c: None}
    actions = missing_actions([a, b, c, c], "snp", allowed)
    assert actions == [
        {"name": "allow_measurement", "args": {"platform": "snp", "measurement": b}},
        {"name": "allow_measurement", "args": {"platform": "snp", "measurement": c}},
    ]
    assert missing_actions([a], "snp", allowed) == []
    assert digest(actions) == digest(list(reversed(actions))) != digest(actions[:1])


def test_the_hardware_platform_is_the_first_non_virtual_one() -> None:
    assert hardware_platform({"tee": {"platforms": ["virtual", "tdx", "sev-snp"]}}) == "tdx"
    assert hardware_platform({"tee": {"platforms": ["sev-snp"]}}) == "snp"
    assert hardware_platform({"tee": {"platforms": ["virtual"]}}) is None
