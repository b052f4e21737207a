"""Alert rules and dashboard: promtool check/test, coverage of every alert by firing and silent cases,
and metric names limited to the list the services expose (helm/conclavium/files/metrics.txt).

The check that a running local network really serves every name in metrics.txt belongs with the
services' end-to-end tests; this module keeps the rules and the dashboard inside that list."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "helm" / "conclavium" / "files"
ALERTS = FILES / "alerts.yaml"
DASHBOARD = FILES / "dashboard.json"
METRICS = FILES / "metrics.txt"
TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bconclavium_[a-z0-9_]+\b")
REQUIRED_ALERTS = {
    "ConclaviumNoCommits",
    "ConclaviumExecutorLagging",
    "ConclaviumForkDetected",
    "ConclaviumAttestationFailures",
    "ConclaviumQuorumAtRisk",
    "ConclaviumGatewayErrorRate",
    "ConclaviumSequencerNoLeader",
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed: run `bash scripts/install-tools.sh` (apt package prometheus)")
    return path


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def served_metrics() -> set[str]:
    lines = (line.split("#", 1)[0].strip() for line in METRICS.read_text().splitlines())
    return {line for line in lines if line}


def base_name(name: str, served: set[str]) -> str:
    """conclavium_x_bucket → conclavium_x when conclavium_x is a served histogram."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in served:
            return name[: -len(suffix)]
    return name


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            exprs.append(query.get("query", ""))
    return exprs


# --- promtool ---------------------------------------------------------------------------------------


def test_promtool_check_rules() -> None:
    proc = run_promtool("check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_promtool_unit_tests_pass() -> None:
    proc = run_promtool("test", "rules", TESTS.name, cwd=TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_unit_tests_catch_a_broken_rule(tmp_path: Path) -> None:
    """The promtool tests have teeth: weakening one alert makes them fail."""
    broken = ALERTS.read_text().replace(
        "expr: max by (namespace, pod) (conclavium_executor_fork_detected) > 0",
        "expr: max by (namespace, pod) (conclavium_executor_fork_detected) > 1",
    )
    assert broken != ALERTS.read_text()
    rules = tmp_path / "alerts.yaml"
    rules.write_text(broken)
    tests = yaml.safe_load(TESTS.read_text())
    tests["rule_files"] = [str(rules)]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    proc = run_promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "ConclaviumForkDetected" in proc.stdout + proc.stderr


# --- coverage -------------------------------------------------------------------------------------


def test_required_alerts_exist_with_severity_and_text() -> None:
    rules = alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert REQUIRED_ALERTS <= set(names)
    for r in rules:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        assert "for" in r, r["alert"]


def test_every_alert_links_its_runbook_section_and_every_section_is_an_alert() -> None:
    runbooks = (Path(__file__).resolve().parents[2] / "docs" / "runbooks.md").read_text()
    sections = {line[3:].strip().lower() for line in runbooks.splitlines() if line.startswith("## ")}
    names = {r["alert"] for r in alert_rules()}
    for r in alert_rules():
        url = r["annotations"].get("runbook_url", "")
        assert url == f"https://conclavium.io/docs/runbooks#{r['alert'].lower()}", r["alert"]
        assert r["alert"].lower() in sections, f"docs/runbooks.md has no section for {r['alert']}"
    assert sections == {n.lower() for n in names}, "runbook sections for alerts that do not exist"


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    suite = yaml.safe_load(TESTS.read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for case in suite["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - silent == set(), "alerts never shown silent"


# --- metric names -----------------------------------------------------------------------------------


def test_metrics_list_follows_prometheus_naming() -> None:
    served = served_metrics()
    lines = [line.split("#", 1)[0].strip() for line in METRICS.read_text().splitlines()]
    listed = [line for line in lines if line]
    assert len(listed) == len(served), "a metric is listed twice"  # completeness: test_metrics_served.py
    for name in served:
        assert re.fullmatch(r"conclavium_(gateway|sequencer|executor|attestation|governance|operator)_[a-z0-9_]+", name)
    counters = {n for n in served if n.endswith("_total")}
    assert "conclavium_executor_tx_committed_total" in counters
    assert not any(n.endswith(HISTOGRAM_SUFFIXES) for n in served), "list histograms by base name"


def test_alert_rules_use_only_served_metrics() -> None:
    served = served_metrics()
    used = {base_name(m, served) for r in alert_rules() for m in METRIC_RE.findall(r["expr"])}
    assert used
    assert used - served == set()


def test_dashboard_uses_only_served_metrics() -> None:
    served = served_metrics()
    used = {base_name(m, served) for e in dashboard_exprs() for m in METRIC_RE.findall(e)}
    assert used - served == set()
    # The dashboard shows every metric the services expose.
    assert served - used == set()


def test_histograms_are_queried_by_bucket_or_sum_count() -> None:
    """A bare histogram name selects nothing: histograms exist only as _bucket/_sum/_count series."""
    histograms = {
        "conclavium_gateway_request_duration_seconds",
        "conclavium_gateway_submit_to_commit_seconds",
        "conclavium_gateway_intake_batch_size",
        "conclavium_sequencer_block_size",
    }
    assert histograms <= served_metrics()
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    bare = {n for e in exprs for n in METRIC_RE.findall(e)} & histograms
    assert bare == set(), f"histograms used without _bucket/_sum/_count: {bare}"


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """Each dashboard query is valid PromQL: checked by promtool as a recording rule."""
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$namespace", "ledger")
        for e in dashboard_exprs()
        if not e.startswith("label_values(")
    ]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"conclavium:dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    proc = run_promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
