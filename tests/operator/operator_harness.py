"""Running the real operator against kmock (a Kubernetes API emulator) and a real local ledger.

Workarounds for kmock 0.8 + kopf 1.45.2 (see /work/shared/notes/kubernetes-tooling.md §3.3):

1. `load_bundled()` discovery data: kopf waits for the "backbone" resources (namespaces, events,
   CRDs) and never watches without them. Our three CRDs are added from the chart's crds/.
2. kmock's path parser breaks on `GET /api/v1/namespaces`: namespace scanning is disabled and the
   operator is given an explicit namespace.
3. kmock sets no `resourceVersion`, `uid`, `generation` or `creationTimestamp`, and answers a failed
   JSON-patch `test` with a 500. `RVEmulator` stamps them, answers 422 to a failed `test` and 409 to a
   stale `resourceVersion` in a merge-patch, bumps `generation` on spec changes, and keeps writes to
   `/status` and to the main resource apart as the API server does for CRDs with a status subresource.
4. Each new watch replays all objects as ADDED: tests wait until the operator watches before
   creating anything, and the handlers are idempotent anyway.
5. `kopf.operator()` in pytest's loop cancels pytest's tasks when it stops: kopf runs in its own
   thread with its own loop; the test loop never blocks (no time.sleep), it polls with asyncio.sleep.
6. kmock validates nothing and garbage-collects nothing: schemas/CEL are tested in tests/chart, and
   cascade deletion is checked through the ownerReferences written.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock
import kopf
import yaml
from conclavium_operator.config import OperatorConfig
from conclavium_operator.handlers import register
from conclavium_operator.kube import OPERATOR_USER_AGENT

from conclavium.local.network import LocalNetwork, start_network

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "helm" / "conclavium" / "crds"
NAMESPACE = "ns1"
GROUP_VERSION = "conclavium.io/v1alpha1"
STATUS_KINDS = {"consortiums", "consortiummembers", "consortiumnodes"}
_versions = itertools.count(1000)


@attrs.frozen
class Unprocessable(kmock.KubernetesError):
    status: int = 422
    reason: str = "Invalid"
    message: str = "the JSON-patch test operation failed"


@attrs.frozen
class Conflict(kmock.KubernetesError):
    status: int = 409
    reason: str = "Conflict"
    message: str = "the object has been modified; please apply your changes to the latest version"


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


VERBS = {"LIST": "list", "WATCH": "watch", "FETCH": "get", "CREATE": "create", "UPDATE": "patch", "DELETE": "delete"}
# (namespaced?, API group, resource[/subresource], verb) of every request the operator made (kopf's
# own client and the operator's, told apart from the tests' requests by their User-Agent).
OPERATOR_CALLS: set[tuple[bool, str, str, str]] = set()


def _record_operator_call(request: Any) -> None:
    agent = str((request.headers or {}).get("User-Agent", ""))
    if request.resource is None or not request.resource.plural or request.action is None:
        return
    if not (agent.startswith("kopf/") or agent.startswith(OPERATOR_USER_AGENT)):
        return
    plural = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
    verb = VERBS[request.action.name]
    OPERATOR_CALLS.add((request.namespace is not None, request.resource.group or "", plural, verb))


@attrs.define(kw_only=True)
class RVEmulator(kmock.KubernetesEmulator):
    """kmock's emulator plus the API-server behaviour kopf relies on (workaround 3)."""

    async def _handle(self, request: Any) -> Any:
        _record_operator_call(request)
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.update(uid=str(uuid.uuid4()), resourceVersion=str(next(_versions)), generation=1)
            meta.setdefault("creationTimestamp", _now())
            meta.setdefault("namespace", request.namespace)
            if request.resource.plural in STATUS_KINDS:
                request.data.pop("status", None)
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            self._stamp_update(request)
        return await super()._handle(request)

    def _current(self, request: Any) -> dict[str, Any] | None:
        key = (request.resource, request.namespace, request.name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return dict(self.objects[key].raw)

    def _stamp_update(self, request: Any) -> None:
        current = self._current(request)
        if current is None:
            return  # kmock answers 404
        meta = current.get("metadata") or {}
        rv = str(next(_versions))
        subresource = request.subresource == "status"
        has_status = request.resource.plural in STATUS_KINDS
        if isinstance(request.data, dict):
            wanted = (request.data.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != meta.get("resourceVersion"):
                raise Conflict()
            if subresource:
                for key in list(request.data):
                    if key not in ("status", "metadata"):
                        del request.data[key]
                request.data["metadata"] = {"resourceVersion": rv}
            else:
                if has_status:
                    request.data.pop("status", None)
                request.data.setdefault("metadata", {})["resourceVersion"] = rv
                if "spec" in request.data:
                    request.data["metadata"]["generation"] = int(meta.get("generation") or 1) + 1
        elif isinstance(request.data, list):
            tests = [op for op in request.data if op.get("op") == "test"]
            try:
                jsonpatch.JsonPatch(tests).apply(current)
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                raise Unprocessable(message=str(e)) from e
            ops = [op for op in request.data if op.get("op") != "test"]
            allowed = ("/status",) if subresource else ("/metadata", "/spec") if has_status else ("",)
            ops = [op for op in ops if any(op["path"] == a or op["path"].startswith(a + "/") for a in allowed)]
            ops.append({"op": "add", "path": "/metadata/resourceVersion", "value": rv})
            if any(op["path"].startswith("/spec") for op in ops):
                ops.append({"op": "add", "path": "/metadata/generation", "value": int(meta.get("generation") or 1) + 1})
            request.data[:] = ops


def load_resources(k8s: kmock.KubernetesEmulator) -> None:
    """Discovery: kmock's bundled core/apps/apiextensions resources plus our CRDs (workaround 1)."""
    k8s.resources.load_bundled()
    for path in sorted(CRDS.glob("conclavium.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        names = crd["spec"]["names"]
        k8s.resources[f"{GROUP_VERSION}/{names['plural']}"] = kmock.ResourceInfo(
            kind=names["kind"],
            namespaced=True,
            verbs={"list", "watch", "get", "patch", "create", "delete", "update"},
            subresources={"status"},
        )


def start_local_network(directory: Path) -> LocalNetwork:
    return start_network(directory, redis=False)


class OperatorThread:
    """The real handlers (conclavium_operator.handlers.register) in a fresh registry, kopf in its own
    thread and event loop (workaround 5), logged in to kmock, namespace scanning off (workaround 2)."""

    def __init__(self, k8s: kmock.KubernetesEmulator, gateway_url: str, **cfg: Any) -> None:
        self.k8s = k8s
        defaults: dict[str, Any] = {
            "poll_interval": 0.5,
            "retry_delay": 0.5,
            "removal_retry_delay": 2.0,
            "metrics_port": 0,
        }
        self.cfg = OperatorConfig(gateway_url=gateway_url, image="example.org/conclavium:test", **{**defaults, **cfg})
        self.registry = kopf.OperatorRegistry()
        server = str(k8s.url).rstrip("/")
        register(self.registry, self.cfg, credentials=lambda **_: kopf.ConnectionInfo(server=server, insecure=True))

        @kopf.on.startup(id="test-settings", registry=self.registry)
        def test_settings(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.scanning.disabled = True
            settings.posting.enabled = False
            settings.networking.error_backoffs = [0.1, 0.2, 0.5]

        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.memo = kopf.Memo()
        self.thread = threading.Thread(target=self._run, name="kopf", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self.registry,
                    standalone=True,
                    namespaces=[NAMESPACE],
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                    memo=self.memo,
                )
            )
        except BaseException as e:
            self.error = e

    async def start(self, timeout: float = 20.0) -> None:
        self.thread.start()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.ready_flag.wait, timeout), "kopf did not become ready"
        for plural in sorted(STATUS_KINDS):  # workaround 4: create nothing before kopf watches
            await wait_for(lambda p=plural: self._watching(p), timeout, f"kopf watching {plural}")

    def _watching(self, plural: str) -> bool:
        return len(list(self.k8s[kmock.action.WATCH, kmock.resource(f"{GROUP_VERSION}/{plural}")])) > 0

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, 20)


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `predicate` on the test loop (which also serves kmock: never block it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def url(plural: str, name: str | None = None, subresource: str | None = None) -> str:
    group = {"statefulsets": "/apis/apps/v1", "poddisruptionbudgets": "/apis/policy/v1"}.get(plural, "/api/v1")
    if plural in STATUS_KINDS:
        group = f"/apis/{GROUP_VERSION}"
    path = f"{group}/namespaces/{NAMESPACE}/{plural}"
    return path + (f"/{name}" if name else "") + (f"/{subresource}" if subresource else "")


def obj(k8s: kmock.KubernetesEmulator, plural: str, name: str) -> dict[str, Any] | None:
    """The stored object, or None (never created or deleted)."""
    resource = {
        "statefulsets": "apps/v1/statefulsets",
        "poddisruptionbudgets": "policy/v1/poddisruptionbudgets",
    }.get(plural, f"v1/{plural}")
    if plural in STATUS_KINDS:
        resource = f"{GROUP_VERSION}/{plural}"
    key = (resource, NAMESPACE, name)
    try:
        stored = k8s.objects[key]
    except KeyError:
        return None
    return None if stored.deleted else dict(stored.raw)


def condition(body: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for c in ((body or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None
