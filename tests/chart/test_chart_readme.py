"""The chart README and docs/kubernetes.md against the code: every value documented exists and every
value is documented, every HTTP route they name is served, the phases they list are exactly the ones
the operator sets (and the CRDs allow), and `logFormat` means what the services do with it."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "conclavium"
README = (CHART / "README.md").read_text()
KUBERNETES_DOC = (ROOT / "docs" / "kubernetes.md").read_text()
OPERATOR = ROOT / "operator" / "conclavium_operator"
if str(ROOT / "operator") not in sys.path:
    sys.path.insert(0, str(ROOT / "operator"))


def _values_table() -> list[str]:
    """The first column of the README's values table, as full dotted keys (`a.b` / `.c` → a.b, a.c)."""
    section = README.split("## Values", 1)[1].split("\n## ", 1)[0]
    keys: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        parent = ""
        for token in re.findall(r"`([^`]+)`", line.split("|")[1]):
            if token.startswith("."):
                keys.append(parent + token)
            else:
                keys.append(token)
                parent = token.rsplit(".", 1)[0] if "." in token else token
    return keys


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in values.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _leaves(v, key + ".")
        else:
            out.append(key)
    return out


def _has(values: dict[str, Any], key: str) -> bool:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_value_is_documented_and_every_documented_value_exists() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    documented = _values_table()
    stale = [k for k in documented if not _has(values, k)]
    assert not stale, f"the README documents values the chart does not have: {stale}"
    missing = [leaf for leaf in _leaves(values) if not any(leaf == d or leaf.startswith(d + ".") for d in documented)]
    assert not missing, f"values the README does not document: {missing}"


def _routes() -> set[str]:
    from conclavium.crypto.keys import PrivateKey
    from services.attestation.app import AttestationService, create_app
    from services.gateway.app import Gateway, GatewayConfig, route_table

    async def ready() -> bool:
        return True

    gateway = Gateway(GatewayConfig(ledger="x", nats_url="nats://127.0.0.1:1"))
    attestation = create_app(AttestationService(PrivateKey.generate()), ready)
    paths = {p for _, p in route_table(gateway.build_app())}
    paths |= {r.resource.canonical for r in attestation.router.routes() if isinstance(r.resource, web.Resource)}
    return paths


@pytest.mark.parametrize("doc", ["helm/conclavium/README.md", "docs/kubernetes.md"])
def test_every_route_the_docs_name_is_served(doc: str) -> None:
    text = (ROOT / doc).read_text()
    named = set(re.findall(r"`(?:GET |POST )?(/(?:v1/[A-Za-z0-9_/{}.-]*|healthz|readyz|metrics|openapi\.json))", text))
    served = _routes()
    unknown = sorted(p for p in named if p.rstrip("/") not in served and not p.endswith("/..."))
    assert not unknown, f"{doc} names routes no service serves: {unknown}"


PHASE_MODULES = {
    "Consortium": ("reconcile_consortium.py", "consortiums"),
    "ConsortiumMember": ("reconcile_member.py", "consortiummembers"),
    "ConsortiumNode": ("reconcile_node.py", "consortiumnodes"),
}


def _phases_set_by(module: str) -> set[str]:
    """Phase literals the module writes (`"phase"] = ...` and `{"phase": ...}`)."""
    found: set[str] = set()
    for line in (OPERATOR / module).read_text().splitlines():
        m = re.search(r'"phase"\]? ?[=:] (.*)', line)
        if m:
            found |= set(re.findall(r'"([A-Z][A-Za-z]+)"', m.group(1)))
    return found


def _readme_phases(kind: str) -> set[str]:
    row = next(line for line in README.splitlines() if line.startswith(f"| {kind} |"))
    cell = re.sub(r"\([^)]*\)", "", row.split("|")[2])
    return {p for p in re.findall(r"[A-Z][A-Za-z]+", cell)}


@pytest.mark.parametrize("kind", sorted(PHASE_MODULES))
def test_phases_in_the_readme_are_the_ones_the_operator_sets(kind: str) -> None:
    module, plural = PHASE_MODULES[kind]
    crd = yaml.safe_load((CHART / "crds" / f"conclavium.io_{plural}.yaml").read_text())
    enum = set(
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["phase"]["enum"]
    )
    set_by_code = _phases_set_by(module)
    assert set_by_code == enum, f"{kind}: the operator sets {sorted(set_by_code)}, the CRD allows {sorted(enum)}"
    assert _readme_phases(kind) == enum, f"{kind}: README lists {sorted(_readme_phases(kind))}"


def test_log_format_values_are_what_the_services_do(capsys: pytest.CaptureFixture[str]) -> None:
    """`logFormat` json → one JSON object per line; plain → text; the schema allows exactly those."""
    from conclavium.runtime import LOG_FORMATS, setup_logging

    schema = json.loads((CHART / "values.schema.json").read_text())
    assert tuple(schema["properties"]["logFormat"]["enum"]) == LOG_FORMATS
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("info", "json")
        logging.getLogger("t").info("hello %s", "json")
        setup_logging("info", "plain")
        logging.getLogger("t").info("hello %s", "plain")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    first, second = capsys.readouterr().err.strip().splitlines()[-2:]
    assert json.loads(first)["msg"] == "hello json"
    assert second.endswith("INFO t: hello plain") and not second.startswith("{")
    with pytest.raises(SystemExit):
        setup_logging("info", "yaml")


def _merged_values() -> dict[str, Any]:
    from chart_support import FULL_VALUES

    def merge(a: Any, b: Any) -> Any:
        if isinstance(a, dict) and isinstance(b, dict):
            return {k: merge(a.get(k), b[k]) if k in a else b[k] for k in b} | {
                k: v for k, v in a.items() if k not in b
            }
        return b

    return merge(yaml.safe_load((CHART / "values.yaml").read_text()), yaml.safe_load(FULL_VALUES.read_text()))


def _setting_paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the settings: maps of free-form keys (labels, selectors, annotations) count as one."""
    out: list[tuple[str, ...]] = []
    for k, v in values.items():
        path = (*prefix, k)
        if isinstance(v, dict) and v and not any("." in key or "/" in key for key in v):
            out += _setting_paths(v, path)
        else:
            out.append(path)
    return out


def _get(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def _candidates(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int | float):
        return [value + 1, value - 1, value * 2]
    if isinstance(value, str):
        return [
            value + "x",
            "x",
            "Always",
            "plain",
            "NodePort",
            "a.example.org",
            "1h",
            "nats://other:4222",
            "redis://other:6379/1",
            "Never",
            "1",
            "3Gi",
            "sha256:" + "a" * 64,
            "50%",
        ]
    if isinstance(value, list):
        return [
            [{"name": "x-test", "value": "y"}],
            [{"key": "k", "operator": "Exists"}],
            [{"name": "x-test"}],
            ["ConclaviumNoCommits"],
            ["x-test"],
            [{"podSelector": {}}],
        ]
    if isinstance(value, dict):
        return [{"test.example/x": "y"}, {"podAffinity": {}}]
    return []


@pytest.mark.slow
def test_every_chart_value_changes_what_the_chart_renders(tmp_path: Path) -> None:
    """A value that changes nothing is a lie in values.yaml and the README: each one, changed alone
    (within the schema) on top of the full-feature values (or the defaults), changes the rendered
    manifests. About 2-3 minutes (one `helm template` per value), marker slow."""
    from concurrent.futures import ThreadPoolExecutor

    from chart_support import FULL_VALUES, MONITORING_API, run_helm, template_args

    base_args = template_args((str(FULL_VALUES),), api_versions=(MONITORING_API,))
    base = run_helm(*base_args).stdout
    merged = _merged_values()
    leaves = _setting_paths(merged)

    default_args = template_args(api_versions=(MONITORING_API,))
    default = run_helm(*default_args).stdout

    def probe(index_key: tuple[int, tuple[str, ...]]) -> tuple[str, str]:
        index, parts = index_key
        key = ".".join(parts)
        current = _get(merged, parts)
        for n, candidate in enumerate(c for c in _candidates(current) if c != current):
            override: dict[str, Any] = {}
            node = override
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = candidate
            path = tmp_path / f"v{index}-{n}.yaml"
            path.write_text(json.dumps(override))  # JSON: no YAML 1.1 surprises (y → true)
            proc = run_helm(*base_args, "--values", str(path), check=False)
            if proc.returncode != 0:
                continue  # outside the schema: try another
            if proc.stdout != base:
                return key, "used"
            # e.g. gateway.replicas, ignored while the full values turn autoscaling on: try the defaults
            alone = run_helm(*default_args, "--values", str(path), check=False)
            return key, "used" if alone.returncode == 0 and alone.stdout != default else "unused"
        return key, "pinned"

    with ThreadPoolExecutor(4) as pool:
        results = dict(pool.map(probe, enumerate(leaves)))
    unused = sorted(k for k, r in results.items() if r == "unused")
    assert not unused, f"values that change nothing the chart renders: {unused}"
    pinned = sorted(k for k, r in results.items() if r == "pinned")
    # The schema pins these on purpose: one operator replica (kopf has no leader election) and the
    # restricted Pod Security Standard's fields.
    allowed = ("operator.replicas", "podSecurityContext.", "containerSecurityContext.")
    odd = [k for k in pinned if not k.startswith(allowed)]
    assert not odd, f"values the test could not vary within the schema: {odd}"
