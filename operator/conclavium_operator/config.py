"""Operator configuration from the environment the chart sets (docs/kubernetes.md, "Contract")."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any


def _float(env: dict[str, str], name: str, default: float) -> float:
    try:
        return float(env.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class OperatorConfig:
    gateway_url: str = "http://127.0.0.1:8000"
    image: str = "ghcr.io/conclavium/conclavium:latest"
    image_pull_policy: str = "IfNotPresent"
    attestation_url: str = ""
    metrics_port: int = 9300
    metrics_host: str = "0.0.0.0"  # POD_IP when the chart passes it: serve on the pod's address
    executor_metrics_port: int = 9100
    sequencer_metrics_port: int = 9200
    instance: str = "conclavium"
    # CONCLAVIUM_CLUSTER_ID (chart value clusterId): part of the names of the nodes this operator makes,
    # so members' nodes in several clusters on one ledger never share a name.
    cluster_id: str = ""
    # The chart's shared settings (ledgerId, nats.*), passed on unchanged to every node: one source for
    # the gateway, the attestation service and the nodes.
    ledger: str = "local"
    nats_url: str = "nats://127.0.0.1:4222"
    stream_replicas: int = 1
    nats_creds: str = ""  # file path in the pods (CONCLAVIUM_NATS_CREDS)
    nats_creds_secret: str = ""  # the Secret mounted there
    nats_ca: str = ""
    nats_tls_secret: str = ""
    # How often timers re-read the ledger (votes, node status): kopf is edge-triggered, the timers are
    # the level-based part of the reconciliation.
    poll_interval: float = 15.0
    # Back-off after the gateway refused or could not be reached.
    retry_delay: float = 30.0
    # How long a refused removal waits before the operator proposes it again.
    removal_retry_delay: float = 300.0
    # Kubernetes API request timeout of the operator's own client.
    request_timeout: float = 30.0
    extra_env: dict[str, str] = field(default_factory=dict)
    # The chart's pod settings for node pods (CONCLAVIUM_NODE_POD_SETTINGS, JSON): imagePullSecrets,
    # podSecurityContext, containerSecurityContext. Unset: the restricted defaults in children.py.
    node_pod: dict[str, Any] = field(default_factory=dict)
    # Operator-owned PodDisruptionBudgets for executors and sequencers (CONCLAVIUM_NODE_PDB).
    node_pdb: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> OperatorConfig:
        env = dict(os.environ if environ is None else environ)
        d = cls()
        return cls(
            gateway_url=env.get("CONCLAVIUM_GATEWAY_URL", d.gateway_url),
            image=env.get("CONCLAVIUM_IMAGE", d.image),
            image_pull_policy=env.get("CONCLAVIUM_IMAGE_PULL_POLICY", d.image_pull_policy),
            attestation_url=env.get("CONCLAVIUM_ATTESTATION_URL", ""),
            metrics_port=int(_float(env, "CONCLAVIUM_OPERATOR_METRICS_PORT", d.metrics_port)),
            metrics_host=env.get("POD_IP") or d.metrics_host,
            executor_metrics_port=int(_float(env, "CONCLAVIUM_EXECUTOR_METRICS_PORT", d.executor_metrics_port)),
            sequencer_metrics_port=int(_float(env, "CONCLAVIUM_SEQUENCER_METRICS_PORT", d.sequencer_metrics_port)),
            instance=env.get("CONCLAVIUM_INSTANCE", d.instance),
            cluster_id=env.get("CONCLAVIUM_CLUSTER_ID", d.cluster_id),
            ledger=env.get("CONCLAVIUM_LEDGER", d.ledger),
            nats_url=env.get("CONCLAVIUM_NATS_URL", d.nats_url),
            stream_replicas=int(_float(env, "CONCLAVIUM_STREAM_REPLICAS", d.stream_replicas)),
            nats_creds=env.get("CONCLAVIUM_NATS_CREDS", ""),
            nats_creds_secret=env.get("CONCLAVIUM_NATS_CREDS_SECRET", ""),
            nats_ca=env.get("CONCLAVIUM_NATS_CA", ""),
            nats_tls_secret=env.get("CONCLAVIUM_NATS_TLS_SECRET", ""),
            poll_interval=_float(env, "CONCLAVIUM_OPERATOR_POLL_INTERVAL", d.poll_interval),
            retry_delay=_float(env, "CONCLAVIUM_OPERATOR_RETRY_DELAY", d.retry_delay),
            removal_retry_delay=_float(env, "CONCLAVIUM_OPERATOR_REMOVAL_RETRY_DELAY", d.removal_retry_delay),
            extra_env={k: env[k] for k in ("CONCLAVIUM_LOG_FORMAT",) if k in env},
            node_pod=_json_object(env, "CONCLAVIUM_NODE_POD_SETTINGS"),
            node_pdb=env.get("CONCLAVIUM_NODE_PDB", "true").lower() != "false",
        )


def _json_object(env: dict[str, str], name: str) -> dict[str, Any]:
    """A JSON object from the environment; a malformed one stops the operator at start with its name
    (the chart renders it, so this is a broken install, not something to run without)."""
    text = env.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{name} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value
