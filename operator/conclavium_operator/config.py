"""Operator configuration from the environment the chart sets (docs/kubernetes.md, "Contract")."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


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
    executor_metrics_port: int = 9100
    sequencer_metrics_port: int = 9200
    instance: str = "conclavium"
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
            executor_metrics_port=int(_float(env, "CONCLAVIUM_EXECUTOR_METRICS_PORT", d.executor_metrics_port)),
            sequencer_metrics_port=int(_float(env, "CONCLAVIUM_SEQUENCER_METRICS_PORT", d.sequencer_metrics_port)),
            instance=env.get("CONCLAVIUM_INSTANCE", d.instance),
            poll_interval=_float(env, "CONCLAVIUM_OPERATOR_POLL_INTERVAL", d.poll_interval),
            retry_delay=_float(env, "CONCLAVIUM_OPERATOR_RETRY_DELAY", d.retry_delay),
            removal_retry_delay=_float(env, "CONCLAVIUM_OPERATOR_REMOVAL_RETRY_DELAY", d.removal_retry_delay),
            extra_env={k: env[k] for k in ("CONCLAVIUM_LOG_FORMAT",) if k in env},
        )
