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
    cmd, port = node_command(node, {"spec": {}}, OperatorConfig())
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


def test_nodes_get_the_charts_shared_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ledger id, NATS URL, stream replicas and the NATS Secrets come from the chart (the operator's
    environment), the same values the chart's gateway and attestation service get, and the services
    read them."""
    from conclavium_operator.children import _env

    cfg = OperatorConfig.from_env(
        {
            "CONCLAVIUM_LEDGER": "trade-finance-2025",
            "CONCLAVIUM_NATS_URL": "tls://nats-0.nats:4222",
            "CONCLAVIUM_STREAM_REPLICAS": "3",
            "CONCLAVIUM_NATS_CREDS": "/etc/conclavium/nats/nats.creds",
            "CONCLAVIUM_NATS_CREDS_SECRET": "conclavium-nats",
            "CONCLAVIUM_NATS_CA": "/etc/conclavium/nats-tls/ca.crt",
            "CONCLAVIUM_NATS_TLS_SECRET": "nats-ca",
        }
    )
    for role in ("Executor", "Sequencer"):
        env_list, volumes, mounts = _env(_node(role), {"spec": {}}, cfg)
        env = {e["name"]: e.get("value") for e in env_list}
        assert env["CONCLAVIUM_LEDGER"] == "trade-finance-2025"
        assert env["CONCLAVIUM_NATS_URL"] == "tls://nats-0.nats:4222"
        assert env["CONCLAVIUM_STREAM_REPLICAS"] == "3"
        assert env["CONCLAVIUM_NATS_CREDS"] == "/etc/conclavium/nats/nats.creds"
        assert env["CONCLAVIUM_NATS_CA"] == "/etc/conclavium/nats-tls/ca.crt"
        assert {"name": "nats-creds", "secret": {"secretName": "conclavium-nats"}} in volumes
        assert {"name": "nats-tls", "secret": {"secretName": "nats-ca"}} in volumes
        assert {"name": "nats-creds", "mountPath": "/etc/conclavium/nats", "readOnly": True} in mounts
        for name in ("CONCLAVIUM_LEDGER", "CONCLAVIUM_NATS_URL", "CONCLAVIUM_STREAM_REPLICAS"):
            monkeypatch.setenv(name, env[name])
        cmd, _ = node_command(_node(role), {"spec": {}}, cfg)
        parsed = (executor_args if role == "Executor" else sequencer_args)(cmd[1:])
        assert (parsed.ledger, parsed.nats_url, parsed.stream_replicas) == (
            "trade-finance-2025",
            env["CONCLAVIUM_NATS_URL"],
            3,
        )


def test_only_the_founding_executor_is_started_with_the_genesis() -> None:
    """The first founding member's executor-0 gets --genesis and the genesis ConfigMap; nobody else."""
    from conclavium_operator.children import desired_nodes, statefulset

    consortium = {"metadata": {"name": "c", "namespace": "ns"}, "spec": {"foundingMembers": ["acme", "globex"]}}
    for member, executors, expected in (("acme", 2, {"acme-executor-0"}), ("globex", 1, set())):
        body = {
            "metadata": {"name": member, "namespace": "ns", "uid": "u"},
            "kind": "ConsortiumMember",
            "spec": {
                "consortiumRef": {"name": "c"},
                "memberId": member,
                "executors": executors,
                "sequencerStandbys": 1,
            },
        }
        founding = set()
        for node in desired_nodes(body, consortium, OperatorConfig()):
            node["metadata"]["uid"] = "n"
            cmd = statefulset(node, consortium, OperatorConfig())["spec"]["template"]["spec"]["containers"][0][
                "command"
            ]
            if "--genesis" in cmd:
                founding.add(node["metadata"]["name"])
                assert node["spec"]["genesisConfigMapName"] == "c-genesis"
                assert executor_args(cmd[1:]).genesis is not None
        assert founding == expected
