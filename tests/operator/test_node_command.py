"""The command the operator gives a node's container is accepted by the service it starts, with the
Consortium's tuning carried through."""

from __future__ import annotations

import pytest
from conclavium_operator.children import duration_seconds, node_command
from conclavium_operator.config import OperatorConfig

from services.executor.main import parse_args as executor_args
from services.sequencer.main import parse_args as sequencer_args


def _node(role: str) -> dict:
    return {
        "metadata": {"name": f"acme-{role.lower()}-0"},
        "spec": {"role": role, "consortiumRef": {"name": "c"}, "memberRef": {"name": "acme"}},
    }


def test_sequencer_gets_block_and_lease_settings() -> None:
    consortium = {
        "spec": {
            "nats": {"streamReplicas": 3},
            "sequencer": {
                "blockInterval": "1s500ms",
                "leaseTtl": "1m",
                "maxBlockTransactions": 2500,
                "maxBlockBytes": 500000,
            },
        }
    }
    cmd, port = node_command(_node("Sequencer"), consortium, OperatorConfig())
    assert cmd[0] == "conclavium-sequencer"
    cfg = sequencer_args(cmd[1:])
    assert cfg.block_interval_ms == 1500
    assert cfg.lease_ttl_s == 60
    assert cfg.max_block_entries == 2500
    assert cfg.max_block_bytes == 500000
    assert cfg.stream_replicas == 3
    assert cfg.http_port == port


def test_sequencer_defaults_when_the_consortium_says_nothing() -> None:
    cmd, _ = node_command(_node("Sequencer"), {"spec": {}}, OperatorConfig())
    cfg = sequencer_args(cmd[1:])
    assert (cfg.block_interval_ms, cfg.max_block_bytes) == (5.0, 900_000)


@pytest.mark.parametrize(("text", "seconds"), [("5ms", 0.005), ("2s", 2.0), ("1m30s", 90.0), ("1h", 3600.0)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "fast", "5 s", "-1s", "1.5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        duration_seconds(text)


@pytest.mark.parametrize(
    ("platform", "provider"), [("virtual", "virtual"), ("sev-snp", "sev-guest"), ("tdx", "configfs-tsm")]
)
def test_executor_command_names_the_tee_provider(platform: str, provider: str) -> None:
    node = _node("Executor")
    node["spec"]["tee"] = {"platform": platform}
    cmd, port = node_command(node, {"spec": {"nats": {"streamReplicas": 1}}}, OperatorConfig())
    assert cmd[0] == "conclavium-executor"
    cfg = executor_args(cmd[1:])
    assert cfg.tee == provider
    assert cfg.http_port == port


def test_executors_get_the_attestation_service_for_collateral(monkeypatch: pytest.MonkeyPatch) -> None:
    """TDX/SGX joins need collateral and SNP joins a VCEK: executors learn where to fetch them."""
    from conclavium_operator.children import _env

    node = _node("Executor")
    node["spec"]["tee"] = {"platform": "tdx"}
    cfg = OperatorConfig(attestation_url="http://conclavium-attestation:8090")
    env = {e["name"]: e.get("value") for e in _env(node, {"spec": {}}, cfg)[0]}
    assert env["CONCLAVIUM_ATTESTATION_URL"] == "http://conclavium-attestation:8090"
    monkeypatch.setenv("CONCLAVIUM_ATTESTATION_URL", env["CONCLAVIUM_ATTESTATION_URL"])
    cmd, _ = node_command(node, {"spec": {}}, cfg)
    assert executor_args(cmd[1:]).attestation_url == "http://conclavium-attestation:8090"
    sequencer_env = {e["name"] for e in _env(_node("Sequencer"), {"spec": {}}, cfg)[0]}
    assert "CONCLAVIUM_ATTESTATION_URL" not in sequencer_env
