"""The Helm chart, rendered offline: lint, Kubernetes schema validation, gating, labels, security
contexts, RBAC, probes, values.schema.json. Needs the helm binary (scripts/install-tools.sh)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_support import (
    CHART,
    FULL_VALUES,
    K8S_VERSION,
    MONITORING_API,
    Json,
    by_kind,
    one,
    pod_specs,
    render,
    render_full,
    require_helm,
    run_helm,
)

# Kinds whose schema kubernetes-validate does not ship (custom resources); checked structurally instead.
CUSTOM_KINDS = {"KopfPeering", "ServiceMonitor", "PodMonitor", "PrometheusRule"}
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
COMPONENT_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/component",
    "helm.sh/chart",
)

VARIANTS: dict[str, Any] = {
    "default": lambda: render(),
    "full": lambda: render_full(),
    "no-optional-components": lambda: render(
        sets=(
            "operator.enabled=false",
            "attestation.enabled=false",
            "networkPolicy.enabled=false",
            "metrics.dashboard.enabled=false",
            "tests.enabled=false",
            "gateway.pdb.enabled=false",
        )
    ),
    "peering-off": lambda: render(sets=("operator.peering.enabled=false",)),
}


@pytest.fixture(scope="module", autouse=True)
def _helm() -> None:
    require_helm()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def docs(request: pytest.FixtureRequest) -> list[Json]:
    return VARIANTS[request.param]()


# --- lint and validation --------------------------------------------------------------------------


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_helm_lint_strict(values: Any) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", "ledger"]
    if values:
        args += ["--values", str(values)]
    proc = run_helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_every_document_is_valid_kubernetes(docs: list[Json]) -> None:
    assert docs
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            assert doc["apiVersion"] in ("kopf.dev/v1", MONITORING_API)
            assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc}")


def test_crds_are_valid_apiextensions_objects() -> None:
    docs = render(extra=("--include-crds",))
    crds = by_kind(docs, "CustomResourceDefinition")
    assert {c["metadata"]["name"] for c in crds} == {
        "consortiums.conclavium.io",
        "consortiummembers.conclavium.io",
        "consortiumnodes.conclavium.io",
        "kopfpeerings.kopf.dev",
    }
    for crd in crds:
        kubernetes_validate.validate(crd, K8S_VERSION, strict=True)


def test_names_are_unique_per_kind(docs: list[Json]) -> None:
    seen = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(seen) == len(set(seen))
    for _, _, name in seen:
        assert len(name) <= 63, name


# --- gating of the Prometheus Operator objects ------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "api_versions", "expected"),
    [
        ((), (), set()),
        ((), (MONITORING_API,), set()),
        (("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"), (), set()),
        (("metrics.serviceMonitor.enabled=true",), (MONITORING_API,), {"ServiceMonitor", "PodMonitor"}),
        (("metrics.prometheusRule.enabled=true",), (MONITORING_API,), {"PrometheusRule"}),
        (
            ("metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true"),
            (MONITORING_API,),
            MONITORING_KINDS,
        ),
    ],
    ids=["off", "api-only", "values-only", "servicemonitor", "prometheusrule", "both"],
)
def test_monitoring_objects_need_value_and_capability(
    sets: tuple[str, ...], api_versions: tuple[str, ...], expected: set[str]
) -> None:
    kinds = {d["kind"] for d in render(sets=sets, api_versions=api_versions)}
    assert kinds & MONITORING_KINDS == expected


def test_service_and_pod_monitors_target_named_metrics_ports() -> None:
    docs = render_full()
    services = {s["metadata"]["name"]: s for s in by_kind(docs, "Service")}
    monitors = by_kind(docs, "ServiceMonitor")
    assert {m["metadata"]["labels"]["app.kubernetes.io/component"] for m in monitors} == {
        "gateway",
        "attestation",
        "operator",
    }
    for sm in monitors:
        assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        selected = [
            s
            for s in services.values()
            if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        assert len(selected) == 1, sm["metadata"]["name"]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            assert ep["port"] in port_names
            assert ep["path"] == "/metrics"
            assert ep["interval"] == "15s"
    (pm,) = by_kind(docs, "PodMonitor")
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert pm["spec"]["namespaceSelector"]["matchNames"] == ["ledger", "ledger-acme"]
    assert pm["spec"]["selector"]["matchExpressions"][0]["values"] == ["executor", "sequencer"]


def test_prometheusrule_embeds_the_alert_file() -> None:
    alerts = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    docs = render(sets=("metrics.prometheusRule.enabled=true",), api_versions=(MONITORING_API,))
    rule = one(docs, "PrometheusRule", "-alerts")
    assert rule["spec"]["groups"] == alerts["groups"]


def test_prometheusrule_rule_labels_and_disabled_alerts() -> None:
    rule = one(render_full(), "PrometheusRule", "-alerts")
    names = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert "ConclaviumSubmitToCommitSlow" not in names
    assert "ConclaviumForkDetected" in names
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            assert r["labels"]["team"] == "ledger"
            assert r["labels"]["severity"] in ("critical", "warning")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_dashboard_configmap_holds_the_dashboard() -> None:
    cm = one(render(), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["conclavium.json"])
    assert dashboard == json.loads((CHART / "files" / "dashboard.json").read_text())
    assert dashboard["uid"] == "conclavium-overview"


# --- labels ---------------------------------------------------------------------------------------


def test_every_object_has_the_standard_labels(docs: list[Json]) -> None:
    for doc in docs:
        labels = doc["metadata"].get("labels", {})
        missing = [k for k in COMPONENT_LABELS if k not in labels]
        assert not missing, f"{doc['kind']}/{doc['metadata']['name']} lacks {missing}"
        assert labels["app.kubernetes.io/part-of"] == "conclavium"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == "conclavium"


def test_selectors_match_pod_templates_and_services(docs: list[Json]) -> None:
    workloads = by_kind(docs, "Deployment")
    for w in workloads:
        selector = w["spec"]["selector"]["matchLabels"]
        pod_labels = w["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert "app.kubernetes.io/component" in selector
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for obj in by_kind(docs, kind):
            if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "nodes":
                continue  # the operator's pods, not the chart's (test_node_pods_get_a_network_policy_...)
            selector = (
                obj["spec"]["selector"]
                if kind == "Service"
                else obj["spec"]["selector" if kind == "PodDisruptionBudget" else "podSelector"]["matchLabels"]
            )
            matches = [w for w in workloads if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()]
            assert len(matches) == 1, f"{kind}/{obj['metadata']['name']} selects {len(matches)} workloads"


def test_common_labels_reach_pods() -> None:
    for w in by_kind(render_full(), "Deployment"):
        assert w["spec"]["template"]["metadata"]["labels"]["team"] == "ledger"


# --- pod security -----------------------------------------------------------------------------------


def test_pods_meet_restricted_pod_security(docs: list[Json]) -> None:
    specs = list(pod_specs(docs))
    assert specs
    for obj, spec in specs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(key), where
        for vol in spec.get("volumes", []):
            assert "hostPath" not in vol, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc["capabilities"].get("add"), where
            assert not sc.get("privileged"), where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert "limits" in c["resources"] and "memory" in c["resources"]["limits"], where
            assert c["image"] == spec["containers"][0]["image"], "one image for all services"


def test_read_only_root_has_a_writable_tmp(docs: list[Json]) -> None:
    for obj, spec in pod_specs(docs):
        if obj["kind"] != "Deployment":
            continue
        for c in spec["containers"]:
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), obj["metadata"]["name"]


# --- components --------------------------------------------------------------------------------------


def _container(docs: list[Json], component: str) -> Json:
    dep = one(docs, "Deployment", f"-{component}")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return container


def test_operator_deployment() -> None:
    docs = render()
    dep = one(docs, "Deployment", "-operator")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    spec = dep["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == one(docs, "ServiceAccount", "-operator")["metadata"]["name"]
    c = _container(docs, "operator")
    cmd = c["command"]
    assert cmd[:2] == ["kopf", "run"]
    assert cmd[-2:] == ["-m", "conclavium_operator.handlers"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in cmd
    assert "--peering=conclavium" in cmd and "--standalone" not in cmd
    assert "--namespace=ledger" in cmd
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9300}
    probe = c["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and ports[probe["port"]] == 8080
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["CONCLAVIUM_GATEWAY_URL"] == "http://conclavium-gateway.ledger.svc:8000"
    assert env["CONCLAVIUM_IMAGE"] == c["image"]
    assert "POD_ID" in env  # kopf's peering identity
    kp = one(docs, "KopfPeering", "conclavium")
    assert kp["metadata"]["namespace"] == "ledger"


def test_operator_standalone_without_peering() -> None:
    docs = render(sets=("operator.peering.enabled=false",))
    assert "--standalone" in _container(docs, "operator")["command"]
    assert not by_kind(docs, "KopfPeering")


def test_operator_watch_namespaces_get_roles_and_peerings() -> None:
    docs = render_full()
    cmd = _container(docs, "operator")["command"]
    assert [a for a in cmd if a.startswith("--namespace=")] == ["--namespace=ledger", "--namespace=ledger-acme"]
    assert "--priority=200" in cmd
    assert {r["metadata"]["namespace"] for r in by_kind(docs, "Role")} == {"ledger", "ledger-acme"}
    assert {r["metadata"]["namespace"] for r in by_kind(docs, "RoleBinding")} == {"ledger", "ledger-acme"}
    assert {p["metadata"]["namespace"] for p in by_kind(docs, "KopfPeering")} == {"ledger", "ledger-acme"}


@pytest.mark.parametrize(
    ("component", "command", "port"),
    [("gateway", "conclavium-gateway", 8000), ("attestation", "conclavium-attestation", 8100)],
)
def test_service_deployments(component: str, command: str, port: int) -> None:
    docs = render()
    c = _container(docs, component)
    assert c["command"] == [command]
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    svc = one(docs, "Service", f"-{component}")
    assert svc["spec"]["ports"][0]["port"] == port and svc["spec"]["ports"][0]["targetPort"] == "http"
    dep = one(docs, "Deployment", f"-{component}")
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert one(docs, "PodDisruptionBudget", f"-{component}")["spec"]["maxUnavailable"] == 1


def test_external_nats_and_redis_wiring() -> None:
    c = _container(render_full(), "gateway")
    env = {e["name"]: e for e in c["env"]}
    assert env["CONCLAVIUM_NATS_URL"]["value"].startswith("tls://nats-0")
    assert env["CONCLAVIUM_NATS_CREDS"]["value"] == "/etc/conclavium/nats/nats.creds"
    assert env["CONCLAVIUM_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "conclavium-redis",
        "key": "redis-password",
    }
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["nats-creds"]["readOnly"] is True
    # The defaults reference no Secrets at all.
    default_env = {e["name"] for e in _container(render(), "gateway")["env"]}
    assert "CONCLAVIUM_REDIS_PASSWORD" not in default_env and "CONCLAVIUM_NATS_CREDS" not in default_env


def test_gateway_hpa_only_when_enabled() -> None:
    assert not by_kind(render(), "HorizontalPodAutoscaler")
    docs = render_full()
    hpa = one(docs, "HorizontalPodAutoscaler", "-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment", "-gateway")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert "replicas" not in one(docs, "Deployment", "-gateway")["spec"]


def test_helm_test_hook_calls_gateway_readyz() -> None:
    docs = render()
    pod = one(docs, "Pod", "-test-readyz")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    url = pod["spec"]["containers"][0]["command"][-1]
    svc = one(docs, "Service", "-gateway")
    assert url == f"http://{svc['metadata']['name']}.ledger.svc:{svc['spec']['ports'][0]['port']}/readyz"


# --- RBAC -------------------------------------------------------------------------------------------


def test_rbac_is_least_privilege() -> None:
    docs = render()
    (cr,) = by_kind(docs, "ClusterRole")
    cluster = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in cr["rules"]}
    assert cluster == {
        (("apiextensions.k8s.io",), ("customresourcedefinitions",)): {"list", "watch"},
        (("",), ("namespaces",)): {"list", "watch"},
    }
    (role,) = by_kind(docs, "Role")
    grants: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                grants.setdefault((g, r), set()).update(rule["verbs"])
    for (_, resource), verbs in grants.items():
        assert "*" not in verbs and resource != "*"
        assert not verbs & {"escalate", "bind", "impersonate", "deletecollection"}
    assert grants == {
        ("conclavium.io", "consortiums"): {"get", "list", "watch", "patch"},
        ("conclavium.io", "consortiummembers"): {"get", "list", "watch", "patch"},
        ("conclavium.io", "consortiumnodes"): {"get", "list", "watch", "create", "patch", "delete"},
        ("conclavium.io", "consortiums/status"): {"patch"},
        ("conclavium.io", "consortiummembers/status"): {"patch"},
        ("conclavium.io", "consortiumnodes/status"): {"patch"},
        ("", "events"): {"create"},
        ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
        ("apps", "statefulsets"): {"get", "create", "patch"},
        ("", "services"): {"create", "patch"},
        ("", "persistentvolumeclaims"): {"get", "create", "patch"},
        ("policy", "poddisruptionbudgets"): {"create", "patch"},
        ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
        ("", "secrets"): {"get"},
    }
    assert ("", "pods") not in grants and ("", "nodes") not in grants
    binding = by_kind(docs, "RoleBinding")[0]
    assert binding["subjects"][0]["name"] == one(docs, "ServiceAccount", "-operator")["metadata"]["name"]


# --- network policies ---------------------------------------------------------------------------------


def test_network_policies_cover_every_component() -> None:
    docs = render_full()
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in by_kind(docs, "NetworkPolicy")}
    assert set(policies) == {"gateway", "attestation", "operator", "nodes"}
    for p in policies.values():
        assert p["spec"]["policyTypes"] == ["Ingress"]
    gw_from = policies["gateway"]["spec"]["ingress"][0]["from"]
    assert {"ipBlock": {"cidr": "10.0.0.0/8"}} in gw_from
    att_from = policies["attestation"]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "conclavium"}}} in att_from
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "ledger-acme"
        for peer in att_from
    )
    op_ingress = policies["operator"]["spec"]["ingress"]
    assert op_ingress[0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_node_pods_get_a_network_policy_in_every_watched_namespace() -> None:
    """The operator's executor and sequencer pods (their labels are the contract in docs/kubernetes.md)
    admit only metrics."""
    docs = render_full()
    nodes = [
        p for p in by_kind(docs, "NetworkPolicy") if p["metadata"]["labels"]["app.kubernetes.io/component"] == "nodes"
    ]
    assert {p["metadata"]["namespace"] for p in nodes} == {r["metadata"]["namespace"] for r in by_kind(docs, "Role")}
    for p in nodes:
        for component in ("executor", "sequencer"):
            pod = {
                "app.kubernetes.io/part-of": "conclavium",
                "app.kubernetes.io/managed-by": "conclavium-operator",
                "app.kubernetes.io/component": component,
                "app.kubernetes.io/name": "conclavium",
                "conclavium.io/node": f"acme-{component}-0",
            }
            assert pod.items() >= p["spec"]["podSelector"]["matchLabels"].items()
        assert p["spec"]["ingress"] == [
            {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": p["spec"]["ingress"][0]["from"]}
        ]
        assert p["spec"]["ingress"][0]["from"], "full values narrow who may scrape"


def test_node_pods_get_the_charts_pull_secrets_security_contexts_and_budget_switch() -> None:
    docs = render_full(sets=("nodes.podDisruptionBudget.enabled=false",))
    (op,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"].endswith("-operator")]
    env = {e["name"]: e.get("value") for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    settings = json.loads(env["CONCLAVIUM_NODE_POD_SETTINGS"])
    values = yaml.safe_load(FULL_VALUES.read_text())
    assert settings["imagePullSecrets"] == values["imagePullSecrets"] and settings["imagePullSecrets"]
    assert settings["podSecurityContext"] == op["spec"]["template"]["spec"]["securityContext"]
    assert settings["containerSecurityContext"] == op["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert env["CONCLAVIUM_NODE_PDB"] == "false"


def test_default_gateway_policy_is_open_and_attestation_is_closed() -> None:
    policies = {p["metadata"]["labels"]["app.kubernetes.io/component"]: p for p in by_kind(render(), "NetworkPolicy")}
    assert "from" not in policies["gateway"]["spec"]["ingress"][0]
    assert policies["attestation"]["spec"]["ingress"][0]["from"]


# --- values.schema.json -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        ("operator.replicas=2", "/operator/replicas"),
        ("gateway.replicas=0", "/gateway/replicas"),
        ("nats.url=http://nats:4222", "/nats/url"),
        ("redis.url=memcached://x", "/redis/url"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("gateway.port=70000", "/gateway/port"),
        ("logFormat=xml", "/logFormat"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("containerSecurityContext.allowPrivilegeEscalation=true", "/containerSecurityContext"),
        ("metrics.serviceMonitor.interval=often", "/metrics/serviceMonitor/interval"),
        ("gatewy.replicas=3", "gatewy"),
    ],
)
def test_values_schema_rejects_bad_values(bad: str, fragment: str) -> None:
    proc = run_helm("template", "x", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in proc.stderr and fragment in proc.stderr, proc.stderr


def _merge(base: Any, override: Any) -> Any:
    """Helm's values merge: maps merge recursively, everything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: _merge(base[k], v) if k in base else v for k, v in override.items()} | {
            k: v for k, v in base.items() if k not in override
        }
    return override


def test_values_yaml_satisfies_its_schema_and_documents_every_key() -> None:
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.validate(values, schema)
    jsonschema.validate(_merge(values, yaml.safe_load(FULL_VALUES.read_text())), schema)
    assert set(values) <= set(schema["properties"])
    readme = (CHART / "README.md").read_text()
    for key in values:
        assert f"`{key}" in readme, f"README does not document {key}"
