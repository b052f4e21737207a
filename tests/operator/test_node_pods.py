"""The pods, budgets and policies the operator builds for its nodes, from the Consortium, the member
and the chart's settings (pure builders; the operator tests run them against kmock)."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from conclavium_operator.children import (
    COMPONENT,
    claim_name,
    desired_nodes,
    disruption_budgets,
    pvc,
    statefulset,
)
from conclavium_operator.config import OperatorConfig

K8S_VERSION = "1.35"


def node(role: str = "Executor", name: str = "acme-executor-0") -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumNode",
        "metadata": {"name": name, "namespace": "ledger", "uid": "u-1"},
        "spec": {
            "role": role,
            "ordinal": 0,
            "consortiumRef": {"name": "trade"},
            "memberRef": {"name": "acme"},
            "memberId": "acme",
            "tee": {"platform": "virtual"},
        },
    }


def container(sts: dict[str, Any]) -> dict[str, Any]:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    return dict(c)


def test_pull_policy_comes_from_the_consortium_else_the_chart() -> None:
    cfg = OperatorConfig(image_pull_policy="IfNotPresent")
    assert container(statefulset(node(), {"spec": {}}, cfg))["imagePullPolicy"] == "IfNotPresent"
    cons = {"spec": {"image": {"pullPolicy": "Always"}}}
    assert container(statefulset(node(), cons, cfg))["imagePullPolicy"] == "Always"
    assert container(statefulset(node(), None, OperatorConfig(image_pull_policy="Never")))["imagePullPolicy"] == "Never"


SETTINGS = {
    "imagePullSecrets": [{"name": "registry-creds"}],
    "podSecurityContext": {"runAsNonRoot": True, "runAsUser": 20002, "fsGroup": 20002},
    "containerSecurityContext": {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
    },
}
MEMBER_POD = {
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "tee", "operator": "In", "values": ["snp"]}]}]
            }
        }
    },
    "topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}
    ],
    "priorityClassName": "ledger-critical",
    "podAnnotations": {"backup.velero.io/backup-volumes": "data"},
}


def member(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "ConsortiumMember",
        "metadata": {"name": "acme", "namespace": "ledger", "uid": "m-1"},
        "spec": {
            "consortiumRef": {"name": "trade"},
            "memberId": "acme",
            "executors": 2,
            "sequencerStandbys": 1,
            **spec,
        },
    }


def consortium() -> dict[str, Any]:
    return {
        "apiVersion": "conclavium.io/v1alpha1",
        "kind": "Consortium",
        "metadata": {"name": "trade", "namespace": "ledger", "uid": "c-1"},
        "spec": {"ledgerId": "trade", "tee": {"platforms": ["virtual"]}},
    }


def built(cfg: OperatorConfig, **spec: Any) -> list[dict[str, Any]]:
    """The StatefulSets of every node a member gets, as the operator builds them."""
    nodes = desired_nodes(member(**spec), consortium(), cfg)
    for n in nodes:
        n["metadata"]["uid"] = "n-" + n["metadata"]["name"]
    return [statefulset(n, consortium(), cfg) for n in nodes]


def test_node_pods_get_the_charts_pull_secrets_and_security_contexts() -> None:
    for sts in built(OperatorConfig(node_pod=SETTINGS)):
        pod = sts["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
        assert pod["securityContext"] == SETTINGS["podSecurityContext"]
        assert container(sts)["securityContext"] == SETTINGS["containerSecurityContext"]
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)
    for sts in built(OperatorConfig()):  # no settings from the chart: the restricted defaults
        pod = sts["spec"]["template"]["spec"]
        assert "imagePullSecrets" not in pod and pod["securityContext"]["runAsNonRoot"] is True
        assert container(sts)["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_default_anti_affinity_spreads_a_consortiums_executors_and_sequencers_over_hosts() -> None:
    for sts in built(OperatorConfig()):
        pod = sts["spec"]["template"]["spec"]
        (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert labels.items() >= selector.items(), "the term matches this role's pods of the consortium"
        assert selector[COMPONENT] == labels[COMPONENT] and selector["conclavium.io/consortium"] == "trade"


def test_member_affinity_spread_priority_and_annotations_reach_the_pods() -> None:
    for sts in built(OperatorConfig(), **MEMBER_POD):
        pod = sts["spec"]["template"]["spec"]
        assert pod["affinity"] == MEMBER_POD["affinity"], "the member's affinity replaces the default"
        assert pod["topologySpreadConstraints"] == MEMBER_POD["topologySpreadConstraints"]
        assert pod["priorityClassName"] == "ledger-critical"
        assert sts["spec"]["template"]["metadata"]["annotations"] == MEMBER_POD["podAnnotations"]
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_disruption_budgets_select_every_node_pod_of_their_role_and_validate_strictly() -> None:
    budgets = {b["metadata"]["labels"][COMPONENT]: b for b in disruption_budgets(consortium())}
    assert set(budgets) == {"executor", "sequencer"}
    for b in budgets.values():
        kubernetes_validate.validate(b, K8S_VERSION, strict=True)
        assert b["spec"]["maxUnavailable"] == 1
        assert b["metadata"]["ownerReferences"][0]["kind"] == "Consortium"
    pods = [sts["spec"]["template"]["metadata"]["labels"] for sts in built(OperatorConfig(), **MEMBER_POD)]
    assert len(pods) == 3
    for labels in pods:
        role = labels[COMPONENT]
        for component, b in budgets.items():
            selects = labels.items() >= b["spec"]["selector"]["matchLabels"].items()
            assert selects == (component == role), (labels, component)
    other = {**pods[0], "conclavium.io/consortium": "other"}
    assert not other.items() >= budgets["executor"]["spec"]["selector"]["matchLabels"].items()


def test_pod_settings_come_from_the_environment_the_chart_sets() -> None:
    cfg = OperatorConfig.from_env(
        {"CONCLAVIUM_NODE_POD_SETTINGS": json.dumps(SETTINGS), "CONCLAVIUM_NODE_PDB": "false"}
    )
    assert cfg.node_pod == SETTINGS and cfg.node_pdb is False
    assert OperatorConfig.from_env({}).node_pdb is True
    with pytest.raises(ValueError, match="CONCLAVIUM_NODE_POD_SETTINGS"):
        OperatorConfig.from_env({"CONCLAVIUM_NODE_POD_SETTINGS": "{not json"})


def test_claims_are_kept_unless_the_member_says_delete_claim_and_carry_the_node_uid() -> None:
    body = {**node(), "metadata": {**node()["metadata"], "uid": "0123456789abcdef"}}
    assert claim_name(body) == f"data-{body['metadata']['name']}-01234567"
    kept = pvc(body, claim_name(body))
    assert kept["metadata"]["ownerReferences"] == [] and kept["metadata"]["name"] == claim_name(body)
    body["spec"] = {**body["spec"], "storage": {"size": "1Gi", "deleteClaim": True}}
    owned = pvc(body, claim_name(body))["metadata"]["ownerReferences"]
    assert [(r["kind"], r["uid"]) for r in owned] == [("ConsortiumNode", "0123456789abcdef")]
    volumes = statefulset(body, None, OperatorConfig(), "data-legacy")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-legacy"}} in volumes


def test_node_names_carry_the_cluster_id() -> None:
    """Members' nodes in two clusters on one ledger never share a name (the ledger knows nodes by name)."""
    cfg = OperatorConfig.from_env({"CONCLAVIUM_CLUSTER_ID": "east"})
    assert cfg.cluster_id == "east"
    names = [n["metadata"]["name"] for n in desired_nodes(member(), consortium(), cfg)]
    assert names == ["acme-east-executor-0", "acme-east-executor-1", "acme-east-sequencer-0"]
    founding = {**consortium(), "spec": {**consortium()["spec"], "foundingMembers": ["acme"]}}
    first = desired_nodes(member(), founding, cfg)[0]
    assert first["spec"]["genesisConfigMapName"] == "trade-genesis"
    plain = [n["metadata"]["name"] for n in desired_nodes(member(), consortium(), OperatorConfig())]
    assert plain == ["acme-executor-0", "acme-executor-1", "acme-sequencer-0"]
