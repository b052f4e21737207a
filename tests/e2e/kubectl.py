"""`kubectl` and `helm` for a walk-through run against kmock: small executables on the script's PATH
that hand their arguments to `Commands` in the test process, which does what the real tools would
do to the API (kmock) and prints what they would print. `helm install` renders the chart with the
real `helm template` and creates every object (CRDs included, `helm test` hooks left out as
`helm install` leaves them); `kubectl` supports the sub-commands the walk-throughs use."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from kubelet import Kubelet

KINDS = {
    # kind → (API prefix, plural)
    "Namespace": ("/api/v1", "namespaces"),
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Service": ("/api/v1", "services"),
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles"),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers"),
    "CustomResourceDefinition": ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions"),
    "KopfPeering": ("/apis/kopf.dev/v1", "kopfpeerings"),
    "Consortium": ("/apis/conclavium.io/v1alpha1", "consortiums"),
    "ConsortiumMember": ("/apis/conclavium.io/v1alpha1", "consortiummembers"),
    "ConsortiumNode": ("/apis/conclavium.io/v1alpha1", "consortiumnodes"),
}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
SHORT = {
    "consortium": "Consortium",
    "consortiums": "Consortium",
    "cons": "Consortium",
    "consortiummember": "ConsortiumMember",
    "consortiummembers": "ConsortiumMember",
    "cmember": "ConsortiumMember",
    "consortiumnode": "ConsortiumNode",
    "consortiumnodes": "ConsortiumNode",
    "cnode": "ConsortiumNode",
    "service": "Service",
    "svc": "Service",
    "services": "Service",
    "deployment": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "sts": "StatefulSet",
    "configmap": "ConfigMap",
    "secret": "Secret",
}
CRDS = Path(__file__).resolve().parents[2] / "helm" / "conclavium" / "crds"


class Failed(Exception):
    pass


def url(kind: str, namespace: str | None, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    base = f"{prefix}/{plural}" if kind in CLUSTER_SCOPED else f"{prefix}/namespaces/{namespace}/{plural}"
    return base + (f"/{name}" if name else "")


def jsonpath(obj: Any, expr: str) -> str:
    """The `{.a.b[0].c}` subset of kubectl's JSONPath, several templates side by side."""

    def one(path: str) -> str:
        value = obj
        for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
            value = value[int(part[1:-1])] if part.startswith("[") else (value or {}).get(part)
        return "" if value is None else str(value)

    return re.sub(r"\{\.([^}]*)\}", lambda m: one(m.group(1)), expr)


class Commands:
    def __init__(self, kubelet: Kubelet, helm_binary: str) -> None:
        self.kubelet = kubelet
        self.api = kubelet.api
        self.helm = helm_binary
        self.log: list[tuple[float, list[str]]] = []
        self.installed: dict[str, list[str]] = {}  # release → the install's options (its values)
        self.contexts: dict[str, Commands] = {}  # other clusters, by kubectl context name

    # --- the API ---------------------------------------------------------------------------------

    def stored(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        prefix, plural = KINDS[kind]
        group_version = prefix.removeprefix("/apis/").removeprefix("/api/")
        for key, obj in list(self.api.objects.items()):
            resource = key[0]
            rv = f"{resource.group}/{resource.version}" if getattr(resource, "group", "") else str(resource.version)
            if rv == group_version and resource.plural == plural and key[2] == name and not obj.deleted:
                if kind in CLUSTER_SCOPED or key[1] == namespace:
                    return dict(obj.raw)
        return None

    async def create(self, doc: dict[str, Any], namespace: str) -> str:
        kind = doc["kind"]
        if kind not in KINDS:
            raise Failed(f"error: the server doesn't have a resource type for {kind}")
        if kind not in CLUSTER_SCOPED:
            doc.setdefault("metadata", {})["namespace"] = namespace
        name = doc["metadata"]["name"]
        if self.stored(kind, namespace, name) is not None:
            resp = await self.api.patch(
                url(kind, namespace, name), json={k: v for k, v in doc.items() if k != "status"}
            )
            verb = "configured"
        else:
            resp = await self.api.post(url(kind, namespace), json=doc)
            verb = "created"
        if resp.status >= 300:
            raise Failed(f"error: {kind} {name}: HTTP {resp.status} {await resp.text()}")
        return f"{kind.lower()}/{name} {verb}"

    # --- helm ------------------------------------------------------------------------------------

    async def helm_cmd(self, argv: list[str], cwd: Path) -> str:
        """`helm install`: the chart rendered with its CRDs and applied. `helm upgrade`: rendered
        without them (Helm never changes `crds/` on an upgrade), with the install's values first when
        `--reuse-values` is given."""
        if not argv or argv[0] not in ("install", "upgrade"):
            raise Failed(f"helm {argv[:1]}: only `helm install` and `helm upgrade` are emulated")
        args = argv[1:]
        namespace = _option(args, "-n", "--namespace") or "default"
        extra = ["--include-crds"]
        if argv[0] == "install":
            self.installed[args[0]] = [a for a in args[2:] if a not in ("-n", "--namespace", namespace)]
        else:
            if args[0] not in self.installed:
                raise Failed(f'Error: UPGRADE FAILED: "{args[0]}" has no deployed releases')
            reuse = "--reuse-values" in args
            args = [a for a in args if a != "--reuse-values"]
            extra = self.installed[args[0]] if reuse else []
        rendered = await asyncio.to_thread(
            subprocess.run,
            [self.helm, "template", *args[:2], *extra, *args[2:], "--namespace", namespace],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=120,
        )
        if rendered.returncode != 0:
            raise Failed(rendered.stderr)
        lines = []
        for doc in yaml.safe_load_all(rendered.stdout):
            if not doc:
                continue
            hook = ((doc.get("metadata") or {}).get("annotations") or {}).get("helm.sh/hook", "")
            if "test" in hook:
                continue  # `helm test` runs these, not `helm install`
            lines.append(await self.create(doc, namespace))
        return f"NAME: {args[0]}\nNAMESPACE: {namespace}\nSTATUS: deployed\n" + "\n".join(lines) + "\n"

    # --- kubectl ---------------------------------------------------------------------------------

    async def kubectl(self, argv: list[str], cwd: Path) -> str:
        args = list(argv)
        namespace = _option(args, "-n", "--namespace") or "default"
        verb, rest = args[0], args[1:]
        if verb == "create" and rest[0] == "namespace":
            doc = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": rest[1]}}
            return await self.create(doc, namespace) + "\n"
        if verb == "create" and rest[:2] == ["secret", "generic"]:
            data: dict[str, str] = {}
            for opt in rest[3:]:
                if opt.startswith("--from-file="):
                    key, path = opt.removeprefix("--from-file=").split("=", 1)
                    data[key] = base64.b64encode((cwd / path).read_bytes()).decode()
                elif opt.startswith("--from-literal="):
                    key, value = opt.removeprefix("--from-literal=").split("=", 1)
                    data[key] = base64.b64encode(value.encode()).decode()
            doc = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": rest[2]}, "type": "Opaque", "data": data}
            return await self.create(doc, namespace)
        if verb == "apply":
            out = []
            target = cwd / _option(rest, "-f", "--filename")
            for path in sorted(target.glob("*.yaml")) if target.is_dir() else [target]:
                for doc in yaml.safe_load_all(path.read_text()):  # JSON too (a YAML subset)
                    for item in (doc or {}).get("items", []) if (doc or {}).get("kind") == "List" else [doc]:
                        if item:
                            out.append(await self.create(item, namespace))
            return "\n".join(out) + "\n"
        if verb == "delete":
            return await self._delete(rest, namespace)
        if verb == "wait":
            return await self._wait(rest, namespace)
        if verb == "get":
            return self._get(rest, namespace)
        raise Failed(f"kubectl {verb}: not emulated")

    async def _delete(self, rest: list[str], namespace: str) -> str:
        """`kubectl delete KIND NAME [--wait=false]`: by default, as kubectl does, until the object is gone
        (its finalizers released)."""
        wait = _option(rest, "--wait") != "false"
        kind, name = SHORT[rest[0].lower()], rest[1]
        if self.stored(kind, namespace, name) is None:
            raise Failed(f'Error from server (NotFound): {rest[0]} "{name}" not found')
        resp = await self.api.delete(url(kind, namespace, name))
        if resp.status >= 300:
            raise Failed(f"error: {kind} {name}: HTTP {resp.status} {await resp.text()}")
        uid = (self.stored(kind, namespace, name) or {}).get("metadata", {}).get("uid")
        deadline = time.monotonic() + 300
        while wait and uid is not None:
            current = self.stored(kind, namespace, name)
            if current is None or current["metadata"].get("uid") != uid:
                break
            if time.monotonic() > deadline:
                raise Failed(f"error: timed out waiting for {kind} {name} to be deleted")
            await asyncio.sleep(0.5)
        return f'{kind.lower()}.conclavium.io "{name}" deleted\n'

    async def _wait(self, rest: list[str], namespace: str) -> str:
        condition = _option(rest, "--for").removeprefix("condition=")
        timeout = float(_option(rest, "--timeout").rstrip("s"))
        kind_name = rest[0]
        kind, name = SHORT[kind_name.split("/")[0].lower()], kind_name.split("/")[1]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            obj = self.stored(kind, namespace, name) or {}
            for c in (obj.get("status") or {}).get("conditions") or []:
                if c.get("type") == condition and c.get("status") == "True":
                    return f"{kind.lower()}.conclavium.io/{name} condition met\n"
            await asyncio.sleep(0.5)
        raise Failed(f"error: timed out waiting for the condition on {kind_name}")

    def _get(self, rest: list[str], namespace: str) -> str:
        output = _option(rest, "-o", "--output")
        if rest[0] == "conclavium":  # the category: all three kinds, with their printer columns
            return "\n".join(
                self._table(kind, namespace) for kind in ("Consortium", "ConsortiumMember", "ConsortiumNode")
            )
        kind = SHORT[rest[0].lower()]
        obj = self.stored(kind, namespace, rest[1])
        if obj is None:
            raise Failed(f'Error from server (NotFound): {rest[0]} "{rest[1]}" not found')
        if output and output.startswith("jsonpath="):
            return jsonpath(obj, output.removeprefix("jsonpath="))
        return json.dumps(obj, indent=2) + "\n"

    def _table(self, kind: str, namespace: str) -> str:
        plural = KINDS[kind][1]
        crd = yaml.safe_load((CRDS / f"conclavium.io_{plural}.yaml").read_text())
        columns = [c for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", []) if not c.get("priority")]
        rows = [["NAME", *(c["name"].upper() for c in columns)]]
        for key, stored in sorted(self.api.objects.items(), key=lambda kv: str(kv[0][2])):
            if key[0].plural == plural and key[1] == namespace and not stored.deleted:
                obj = dict(stored.raw)
                cells = [f"{kind.lower()}.conclavium.io/{obj['metadata']['name']}"]
                cells += [jsonpath(obj, "{" + c["jsonPath"] + "}") for c in columns]
                rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"

    # --- the executables -------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        """One command; `kubectl --context NAME` / `helm --kube-context NAME` act on the cluster of
        that name in `self.contexts` (a second cluster), any other on this one."""
        body = await request.json()
        self.log.append((time.time(), [body["tool"], *body["argv"]]))
        argv = list(body["argv"])
        context = _option(argv, "--kube-context" if body["tool"] == "helm" else "--context")
        target = self if context is None else self.contexts.get(context)
        try:
            if target is None:
                raise Failed(f'error: context "{context}" does not exist')
            if body["tool"] == "helm":
                out = await target.helm_cmd(argv, Path(body["cwd"]))
            else:
                out = await target.kubectl(argv, Path(body["cwd"]))
            return web.json_response({"stdout": out, "stderr": "", "code": 0})
        except Failed as e:
            return web.json_response({"stdout": "", "stderr": f"{e}\n", "code": 1})
        except Exception as e:  # an emulation gap: say so, as a failing command
            return web.json_response({"stdout": "", "stderr": f"emulation error: {e!r}\n", "code": 2})

    def install(self, bin_dir: Path, endpoint: str) -> None:
        """Write `kubectl` and `helm` into bin_dir; they send their argv to `endpoint`."""
        bin_dir.mkdir(parents=True, exist_ok=True)
        for tool in ("kubectl", "helm"):
            script = bin_dir / tool
            script.write_text(
                f"#!{sys.executable}\n"
                "import json, os, sys, urllib.request\n"
                f"body = json.dumps({{'tool': {tool!r}, 'argv': sys.argv[1:], 'cwd': os.getcwd()}}).encode()\n"
                f"with urllib.request.urlopen(urllib.request.Request({endpoint!r}, data=body), timeout=900) as r:\n"
                "    out = json.load(r)\n"
                "sys.stdout.write(out['stdout']); sys.stderr.write(out['stderr']); sys.exit(out['code'])\n"
            )
            script.chmod(0o755)


def _option(args: list[str], *names: str) -> str | None:
    """Remove `--name value` / `--name=value` from args and return the value."""
    for i, a in enumerate(list(args)):
        for n in names:
            if a == n:
                value = args[i + 1]
                del args[i : i + 2]
                return value
            if a.startswith(n + "="):
                del args[i]
                return a.split("=", 1)[1]
    return None


def shell_block(markdown: str, heading: str) -> str:
    """The first ```sh block after `heading` in a Markdown document."""
    section = markdown.split(heading, 1)[1]
    return section.split("```sh\n", 1)[1].split("```", 1)[0]


__all__ = ["Commands", "shell_block", "shlex"]
