"""Builders for the objects the operator owns: ConsortiumNodes of a member, and the StatefulSet,
headless Service and PVC of each node. Pure functions of the specs, so names are deterministic and
re-running a handler produces the same objects (create-or-patch then changes nothing)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from conclavium_operator import API_VERSION
from conclavium_operator.config import OperatorConfig

PART_OF = "app.kubernetes.io/part-of"
MANAGED_BY = "app.kubernetes.io/managed-by"
COMPONENT = "app.kubernetes.io/component"
NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
MEMBER_LABEL = "conclavium.io/member"
NODE_LABEL = "conclavium.io/node"
CONSORTIUM_LABEL = "conclavium.io/consortium"
OPERATOR = "conclavium-operator"
DATA_DIR = "/var/lib/conclavium"
GENESIS_DIR = "/etc/conclavium/genesis"
GENESIS_KEY = "genesis.json"
# TEE platform → the executor's --tee provider. SEV-SNP: /dev/sev-guest's extended report, which
# returns the host's VCEK chain (or the VCEK comes from AMD KDS through the attestation service);
# TDX: configfs-tsm; both with collateral through the attestation service (CONCLAVIUM_ATTESTATION_URL).
TEE_PROVIDERS = {"virtual": "virtual", "sev-snp": "sev-guest", "tdx": "configfs-tsm", "sgx": "gramine"}
# Member fields copied onto each ConsortiumNode and from there into its pod.
POD_FIELDS = (
    "nodeSelector",
    "tolerations",
    "resources",
    "affinity",
    "topologySpreadConstraints",
    "priorityClassName",
    "podAnnotations",
)
MAX_NAME = 52  # StatefulSet pods get a 63-character controller-revision-hash label: 52 + "-" + 10


_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A duration as the CRDs write it (Go style, e.g. `5ms`, `2s`, `1m30s`) in seconds."""
    parts = _DURATION_PART.findall(str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _DURATION_UNIT_S[u] for n, u in parts)


def short_name(base: str, limit: int = MAX_NAME) -> str:
    """A DNS-1035 label of at most `limit` characters; long names keep a hash so they stay unique."""
    name = base if base[:1].isalpha() else f"n-{base}"
    name = name.replace(".", "-")
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def node_name(member: str, role: str, ordinal: int, cluster: str = "") -> str:
    """`<member>-<role>-<n>`, or `<member>-<cluster>-<role>-<n>` with a cluster id: the ledger knows a
    node by this name, so a member running nodes in two clusters gets distinct names."""
    return short_name("-".join(p for p in (member, cluster, role.lower(), str(ordinal)) if p))


def genesis_configmap_name(consortium: dict[str, Any]) -> str:
    """The ConfigMap holding the Consortium's genesis configuration (operator/genesis.py)."""
    return short_name(f"{consortium['metadata']['name']}-genesis", 253)


def founding_node_name(consortium: dict[str, Any] | None, cluster: str = "") -> str | None:
    """The executor that creates the ledger: `executor-0` of the first of the Consortium's foundingMembers."""
    names = ((consortium or {}).get("spec") or {}).get("foundingMembers") or []
    return node_name(str(names[0]), "Executor", 0, cluster) if names else None


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": body.get("apiVersion", API_VERSION),
        "kind": body["kind"],
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def labels(consortium: str, member: str, component: str, node: str | None = None) -> dict[str, str]:
    result = {
        PART_OF: "conclavium",
        MANAGED_BY: OPERATOR,
        COMPONENT: component,
        NAME: "conclavium",
        CONSORTIUM_LABEL: consortium,
        MEMBER_LABEL: member,
    }
    if node:
        result[NODE_LABEL] = node
    return result


def desired_nodes(
    member: dict[str, Any], consortium: dict[str, Any] | None, cfg: OperatorConfig
) -> list[dict[str, Any]]:
    """One ConsortiumNode per executor and per sequencer standby, owned by the member (ordinals from 0)."""
    spec = member["spec"]
    plan = [("Executor", int(spec.get("executors", 1))), ("Sequencer", int(spec.get("sequencerStandbys", 0)))]
    return [member_node(member, consortium, cfg, role, ordinal) for role, count in plan for ordinal in range(count)]


def member_node(
    member: dict[str, Any], consortium: dict[str, Any] | None, cfg: OperatorConfig, role: str, ordinal: int
) -> dict[str, Any]:
    """The member's ConsortiumNode of `role` with `ordinal`, running the Consortium's current image."""
    spec, meta = member["spec"], member["metadata"]
    cons_spec = (consortium or {}).get("spec") or {}
    platforms = (cons_spec.get("tee") or {}).get("platforms") or ["virtual"]
    tee = spec.get("tee") or {}
    platform = tee.get("platform") or platforms[0]
    runtime_class = tee.get("runtimeClassName") or (cons_spec.get("tee") or {}).get("runtimeClassName")
    consortium_name = spec["consortiumRef"]["name"]
    node_spec: dict[str, Any] = {
        "consortiumRef": {"name": consortium_name},
        "memberRef": {"name": meta["name"]},
        "memberId": spec["memberId"],
        "image": node_image(consortium, cfg),
        "storage": spec.get("storage") or {"size": "10Gi"},
    }
    for key in POD_FIELDS:
        if spec.get(key):
            node_spec[key] = spec[key]
    name = node_name(meta["name"], role, ordinal, cfg.cluster_id)
    node_spec.update(role=role, ordinal=ordinal)
    if consortium is not None and name == founding_node_name(consortium, cfg.cluster_id) and role == "Executor":
        node_spec["genesisConfigMapName"] = genesis_configmap_name(consortium)
    if role == "Executor":
        node_spec["tee"] = {"platform": platform, **({"runtimeClassName": runtime_class} if runtime_class else {})}
    return {
        "apiVersion": API_VERSION,
        "kind": "ConsortiumNode",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels(consortium_name, meta["name"], role.lower(), name),
            "ownerReferences": [owner_reference(member)],
        },
        "spec": node_spec,
    }


def node_image(consortium: dict[str, Any] | None, cfg: OperatorConfig) -> str:
    """The Consortium's image/version if set, else the chart's image (CONCLAVIUM_IMAGE)."""
    spec = (consortium or {}).get("spec") or {}
    image = spec.get("image") or {}
    repo = image.get("repository") or cfg.image.rsplit("@", 1)[0].rsplit(":", 1)[0]
    if image.get("digest"):
        return f"{repo}@{image['digest']}"
    tag = image.get("tag") or (spec.get("version") or "").lstrip("v")
    if tag:
        return f"{repo}:{tag}"
    return cfg.image if not image.get("repository") else f"{repo}:latest"


def pull_policy(consortium: dict[str, Any] | None, cfg: OperatorConfig) -> str:
    """The Consortium's `image.pullPolicy` if set, else the chart's (CONCLAVIUM_IMAGE_PULL_POLICY)."""
    image = ((consortium or {}).get("spec") or {}).get("image") or {}
    return str(image.get("pullPolicy") or cfg.image_pull_policy)


def _security(cfg: OperatorConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The chart's podSecurityContext / containerSecurityContext (CONCLAVIUM_NODE_POD_SETTINGS; the
    chart's schema keeps them restricted), else the restricted Pod Security Standard defaults."""
    pod = cfg.node_pod.get("podSecurityContext") or {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = cfg.node_pod.get("containerSecurityContext") or {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container


def _env(
    node: dict[str, Any], consortium: dict[str, Any] | None, cfg: OperatorConfig
) -> tuple[list[Any], list[Any], list[Any]]:
    """Environment, volumes and mounts: the chart's shared settings (ledger id, NATS URL, stream
    replicas, credentials and CA, mounted from the same Secrets at the same paths as in the chart's pods)."""
    env: list[dict[str, Any]] = [
        {"name": "CONCLAVIUM_NODE_NAME", "value": node["metadata"]["name"]},
        {"name": "CONCLAVIUM_LEDGER", "value": cfg.ledger},
        {"name": "CONCLAVIUM_NATS_URL", "value": cfg.nats_url},
        {"name": "CONCLAVIUM_STREAM_REPLICAS", "value": str(cfg.stream_replicas)},
        {"name": "CONCLAVIUM_DATA_DIR", "value": DATA_DIR},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if node["spec"].get("role") == "Executor" and cfg.attestation_url:
        # Where executors fetch the collateral their join evidence needs (services/attestation).
        env.append({"name": "CONCLAVIUM_ATTESTATION_URL", "value": cfg.attestation_url})
    env += [{"name": k, "value": v} for k, v in sorted(cfg.extra_env.items())]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    for secret, path, volume, variable in (
        (cfg.nats_creds_secret, cfg.nats_creds, "nats-creds", "CONCLAVIUM_NATS_CREDS"),
        (cfg.nats_tls_secret, cfg.nats_ca, "nats-tls", "CONCLAVIUM_NATS_CA"),
    ):
        if secret and path:
            volumes.append({"name": volume, "secret": {"secretName": secret}})
            mounts.append({"name": volume, "mountPath": path.rsplit("/", 1)[0], "readOnly": True})
            env.append({"name": variable, "value": path})
    genesis = node["spec"].get("genesisConfigMapName")
    if genesis and node["spec"].get("role") == "Executor":
        volumes.append({"name": "genesis", "configMap": {"name": genesis}})
        mounts.append({"name": "genesis", "mountPath": GENESIS_DIR, "readOnly": True})
    return env, volumes, mounts


def node_command(node: dict[str, Any], consortium: dict[str, Any] | None, cfg: OperatorConfig) -> tuple[list[str], int]:
    spec = node["spec"]
    cons_spec = (consortium or {}).get("spec") or {}
    if spec["role"] == "Executor":
        port = cfg.executor_metrics_port
        platform = (spec.get("tee") or {}).get("platform", "virtual")
        cmd = ["conclavium-executor", "--tee", TEE_PROVIDERS.get(platform, "virtual")]
        if spec.get("genesisConfigMapName"):
            # The founding executor: it creates the ledger once (an executor whose ledger stream already
            # holds a genesis never makes another, so restarts and re-reconciles are harmless).
            cmd += ["--genesis", f"{GENESIS_DIR}/{GENESIS_KEY}"]
    else:
        port = cfg.sequencer_metrics_port
        cmd = ["conclavium-sequencer"]
        seq = cons_spec.get("sequencer") or {}
        if seq.get("blockInterval"):
            cmd += ["--block-interval-ms", f"{duration_seconds(seq['blockInterval']) * 1000:g}"]
        if seq.get("leaseTtl"):
            cmd += ["--lease-ttl", f"{duration_seconds(seq['leaseTtl']):g}"]
        if seq.get("maxBlockTransactions"):
            cmd += ["--max-block-entries", str(seq["maxBlockTransactions"])]
        if seq.get("maxBlockBytes"):
            cmd += ["--max-block-bytes", str(seq["maxBlockBytes"])]
    cmd += ["--http-host", "0.0.0.0", "--http-port", str(port)]
    return cmd, port


def statefulset(
    node: dict[str, Any], consortium: dict[str, Any] | None, cfg: OperatorConfig, claim: str | None = None
) -> dict[str, Any]:
    """A StatefulSet of 1 running the node, with its PVC `claim` (default: `claim_name`) at the data directory."""
    meta, spec = node["metadata"], node["spec"]
    name = meta["name"]
    component = spec["role"].lower()
    node_labels = labels(spec["consortiumRef"]["name"], spec["memberRef"]["name"], component, name)
    selector = {NAME: "conclavium", COMPONENT: component, NODE_LABEL: name}
    pod_security, container_security = _security(cfg)
    env, volumes, mounts = _env(node, consortium, cfg)
    volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": claim or claim_name(node)}})
    mounts.append({"name": "data", "mountPath": DATA_DIR})
    command, port = node_command(node, consortium, cfg)
    container: dict[str, Any] = {
        "name": component,
        "image": spec.get("image") or cfg.image,
        "imagePullPolicy": pull_policy(consortium, cfg),
        "command": command,
        "env": env,
        "ports": [{"name": "metrics", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "initialDelaySeconds": 15,
            "periodSeconds": 20,
        },
        "securityContext": container_security,
        "volumeMounts": mounts,
    }
    if spec.get("resources"):
        container["resources"] = spec["resources"]
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        "automountServiceAccountToken": False,
        "containers": [container],
        "volumes": volumes,
    }
    runtime_class = (spec.get("tee") or {}).get("runtimeClassName")
    if runtime_class and spec["role"] == "Executor":
        pod_spec["runtimeClassName"] = runtime_class
    for key in ("nodeSelector", "tolerations", "topologySpreadConstraints", "priorityClassName"):
        if spec.get(key):
            pod_spec[key] = spec[key]
    pod_spec["affinity"] = spec.get("affinity") or default_affinity(spec["consortiumRef"]["name"], component)
    if cfg.node_pod.get("imagePullSecrets"):
        pod_spec["imagePullSecrets"] = cfg.node_pod["imagePullSecrets"]
    template_meta: dict[str, Any] = {"labels": node_labels}
    if spec.get("podAnnotations"):
        template_meta["annotations"] = dict(spec["podAnnotations"])
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": node_labels,
            "ownerReferences": [owner_reference(node)],
        },
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": selector},
            "template": {"metadata": template_meta, "spec": pod_spec},
        },
    }


def default_affinity(consortium: str, component: str) -> dict[str, Any]:
    """Prefer one host per executor (and per sequencer) of a consortium: losing a host then costs the
    commit quorum one signature, not several. Preferred, so a small cluster still schedules them."""
    term = {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": {CONSORTIUM_LABEL: consortium, COMPONENT: component, MANAGED_BY: OPERATOR}},
    }
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def budget_selector(consortium: str, component: str) -> dict[str, str]:
    return {PART_OF: "conclavium", MANAGED_BY: OPERATOR, CONSORTIUM_LABEL: consortium, COMPONENT: component}


def disruption_budgets(consortium: dict[str, Any]) -> list[dict[str, Any]]:
    """One PodDisruptionBudget per role of a consortium (`maxUnavailable: 1`): a drain evicts one executor
    and one sequencer at a time, across all members' nodes in the namespace. Owned by the Consortium."""
    meta = consortium["metadata"]
    budgets = []
    for component in ("executor", "sequencer"):
        budgets.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": {
                    "name": short_name(f"{meta['name']}-{component}s", 253),
                    "namespace": meta["namespace"],
                    "labels": {
                        PART_OF: "conclavium",
                        MANAGED_BY: OPERATOR,
                        CONSORTIUM_LABEL: meta["name"],
                        COMPONENT: component,
                    },
                    "ownerReferences": [owner_reference(consortium)],
                },
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": budget_selector(meta["name"], component)}},
            }
        )
    return budgets


def service(node: dict[str, Any], cfg: OperatorConfig) -> dict[str, Any]:
    """Headless Service: the stable DNS name of the node's pod and the PodMonitor's metrics port."""
    meta, spec = node["metadata"], node["spec"]
    component = spec["role"].lower()
    port = cfg.executor_metrics_port if spec["role"] == "Executor" else cfg.sequencer_metrics_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "labels": labels(spec["consortiumRef"]["name"], spec["memberRef"]["name"], component, meta["name"]),
            "ownerReferences": [owner_reference(node)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {NAME: "conclavium", COMPONENT: component, NODE_LABEL: meta["name"]},
            "ports": [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}],
        },
    }


def pvc_name(node: str) -> str:
    """The claim name of nodes created before claims carried the node's uid (still used by them)."""
    return f"data-{node}"


def claim_name(node: dict[str, Any]) -> str:
    """A new node's claim: its name and uid. A claim kept after an earlier node of the same name went
    (`deleteClaim: false`) holds that node's sealed keys and ledger copy, so the next node never mounts it."""
    meta = node["metadata"]
    uid = str(meta.get("uid") or "")[:8]
    return short_name(f"data-{meta['name']}-{uid}" if uid else pvc_name(meta["name"]), 253)


def pvc(node: dict[str, Any], name: str) -> dict[str, Any]:
    """The node's volume: ledger copy, snapshots and sealed keys. Kept when the node goes, unless the
    member says `storage.deleteClaim: true` (then owned by the node, so garbage collection deletes it)."""
    meta, spec = node["metadata"], node["spec"]
    storage = spec.get("storage") or {}
    pvc_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": storage.get("size", "10Gi")}},
    }
    if storage.get("storageClassName"):
        pvc_spec["storageClassName"] = storage["storageClassName"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels(
                spec["consortiumRef"]["name"], spec["memberRef"]["name"], spec["role"].lower(), meta["name"]
            ),
            "ownerReferences": [owner_reference(node)] if storage.get("deleteClaim") else [],
        },
        "spec": pvc_spec,
    }
