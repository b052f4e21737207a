"""Every metric the alert rules and the dashboard use (helm/conclavium/files/metrics.txt) is served
by the running services of a local network, so the chart and the code cannot drift apart."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.request import urlopen

from prometheus_client import REGISTRY

from conclavium.local.network import LocalNetwork

METRICS_TXT = Path(__file__).resolve().parents[2] / "helm" / "conclavium" / "files" / "metrics.txt"


def _listed() -> set[str]:
    lines = (line.split("#")[0].strip() for line in METRICS_TXT.read_text().splitlines())
    return {line for line in lines if line}


def _served(port: int) -> set[str]:
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def test_every_listed_metric_is_served(network: LocalNetwork) -> None:
    served: set[str] = set()
    for name, proc in network.procs.items():
        if name in ("nats", "redis"):
            continue
        assert proc.port is not None
        served |= _served(proc.port)
    import conclavium_operator.metrics  # noqa: F401 - registers the operator's metrics

    operator = {m.name for m in REGISTRY.collect()}
    served |= {n for n in operator if n.startswith("conclavium_operator_")}
    families = {re.sub(r"_total$", "", n) for n in served} | served
    missing = sorted(n for n in _listed() if n not in families and re.sub(r"_total$", "", n) not in families)
    assert not missing, f"listed in metrics.txt but served by no process: {missing}"


def _registered() -> set[str]:
    """Every conclavium_* metric the code registers (counters without prometheus_client's `_total`)."""
    import conclavium_operator.metrics  # noqa: F401

    import services.executor.apps.eth.metrics
    import services.executor.metrics
    import services.gateway.metrics
    import services.sequencer.metrics  # noqa: F401
    from conclavium.crypto.keys import PrivateKey
    from services.attestation.app import AttestationService

    attestation = AttestationService(PrivateKey.generate()).registry  # a registry per service instance
    families = [*REGISTRY.collect(), *attestation.collect()]
    return {m.name for m in families if m.name.startswith("conclavium_")}


def test_metrics_txt_lists_exactly_the_registered_metrics() -> None:
    """metrics.txt is the list the operations docs, alerts and dashboard rely on: no metric the code
    exports may be missing from it, and nothing may be listed that the code does not export."""
    listed = {re.sub(r"_total$", "", n) for n in _listed()}
    registered = _registered()
    assert not sorted(registered - listed), f"exported but not in metrics.txt: {sorted(registered - listed)}"
    assert not sorted(listed - registered), f"in metrics.txt but not exported: {sorted(listed - registered)}"
