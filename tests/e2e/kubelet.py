"""The smallest honest stand-in for the parts of Kubernetes a Helm install needs, without a cluster.

kmock is the API server. `Kubelet` plays kubelet, kube-proxy and cluster DNS for the objects kmock
holds, and nothing else: it takes no per-test configuration.

- Every Deployment and StatefulSet in the namespace gets `spec.replicas` pods (`<name>-<i>`); each pod
  runs its container's `command` + `args` as a local process with its `env` (values, `fieldRef`,
  `secretKeyRef`, `configMapKeyRef` resolved from kmock). Deleting a workload or lowering its
  replicas stops pods; a pod whose process exits is restarted (restartPolicy Always).
- Each pod has its own loopback address (127.1.x.y), its "pod IP": an address the container binds as
  `0.0.0.0` is its pod IP, so pods can use the ports the manifests name without colliding.
- Volumes are directories: `emptyDir` per pod, `persistentVolumeClaim` per claim (kept across pod
  restarts), `secret` and `configMap` written from kmock (the pod waits until they exist). A path
  under a volume's `mountPath` in an argument or env value is that directory (the process cannot
  mount, so the kubelet maps the mount into what the process reads).
- A Service with a selector gets a cluster IP (127.2.x.y) and a TCP proxy to a ready pod matching the
  selector (kube-proxy); `<svc>.<ns>.svc[.cluster.local]` in arguments and env is that IP (DNS).
- `readinessProbe.httpGet` is polled; the workload's `status.replicas` / `readyReplicas` are written
  through the `/status` subresource as the controllers would.
- A pod template with `automountServiceAccountToken: true` gets `KUBECONFIG` pointing at kmock, the
  stand-in for the ServiceAccount token mount (kopf's login falls back to a kubeconfig).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import kmock

WORKLOADS = ("apps/v1/deployments", "apps/v1/statefulsets")
SERVICE_DNS = re.compile(
    r"\b([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(\.cluster\.local)?\b"
)
_pod_ips = (f"127.1.{i // 250}.{i % 250 + 1}" for i in itertools.count())
_cluster_ips = (f"127.2.{i // 250}.{i % 250 + 1}" for i in itertools.count())


class NotYet(Exception):
    """A pod cannot start yet (a Secret or ConfigMap it needs is not in the API)."""


@dataclass
class Pod:
    name: str
    workload: tuple[str, str]  # (resource, name)
    template: dict[str, Any]
    ip: str
    log: Path
    process: asyncio.subprocess.Process | None = None
    ports: dict[str, int] = field(default_factory=dict)  # container port name → number
    ready: bool = False
    failures: int = 0
    successes: int = 0
    next_probe: float = 0.0
    restarts: int = 0
    started_at: float = 0.0

    @property
    def labels(self) -> dict[str, str]:
        return dict((self.template.get("metadata") or {}).get("labels") or {})


@dataclass
class Proxy:
    ip: str
    servers: dict[int, asyncio.base_events.Server] = field(default_factory=dict)


class Kubelet:
    def __init__(self, api: kmock.KubernetesEmulator, namespace: str, root: Path, bin_dir: Path) -> None:
        self.api = api
        self.ns = namespace
        self.root = root
        self.bin_dir = bin_dir
        self.pods: dict[str, Pod] = {}
        self.proxies: dict[str, Proxy] = {}
        self.status_written: dict[tuple[str, str], tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.kubeconfig = root / "kubeconfig"

    # --- life ------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        server = str(self.api.url).rstrip("/")
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n"
            f"clusters: [{{name: kmock, cluster: {{server: '{server}', insecure-skip-tls-verify: true}}}}]\n"
            "users: [{name: kubelet, user: {token: kmock}}]\n"
            f"contexts: [{{name: kmock, context: {{cluster: kmock, user: kubelet, namespace: {self.ns}}}}}]\n"
        )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.gather(*(self._kill(p) for p in list(self.pods.values())))
        self.pods.clear()
        for proxy in self.proxies.values():
            for srv in proxy.servers.values():
                srv.close()
        if self._http is not None:
            await self._http.close()

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # keep the kubelet alive; the test sees the symptom
                (self.root / "kubelet-errors.log").open("a").write(f"{time.time():.3f} {e!r}\n")
            await asyncio.sleep(0.3)

    # --- the API ---------------------------------------------------------------------------------

    def objects(self, resource: str) -> list[dict[str, Any]]:
        """Live objects of `resource` ("v1/services", "apps/v1/statefulsets") in the namespace."""
        group_version, plural = resource.rsplit("/", 1)
        out = []
        for key, stored in list(self.api.objects.items()):
            r = key[0]
            rv = f"{r.group}/{r.version}" if getattr(r, "group", "") else str(r.version)
            if rv == group_version and r.plural == plural and key[1] == self.ns and not stored.deleted:
                out.append(dict(stored.raw))
        return out

    def get(self, resource: str, name: str) -> dict[str, Any] | None:
        for o in self.objects(resource):
            if o["metadata"]["name"] == name:
                return o
        return None

    # --- reconcile -------------------------------------------------------------------------------

    async def sync(self) -> None:
        wanted: dict[str, tuple[tuple[str, str], dict[str, Any]]] = {}
        for resource in WORKLOADS:
            for w in self.objects(resource):
                replicas = int((w.get("spec") or {}).get("replicas", 1))
                for i in range(replicas):
                    wanted[f"{w['metadata']['name']}-{i}"] = ((resource, w["metadata"]["name"]), w["spec"]["template"])
        for name in [n for n in self.pods if n not in wanted]:
            await self._kill(self.pods.pop(name))
        for name, (workload, template) in wanted.items():
            pod = self.pods.get(name)
            if pod is not None and pod.template != template:  # the template changed: a new pod
                await self._kill(self.pods.pop(name))
                pod = None
            if pod is None:
                pod = Pod(name, workload, template, next(_pod_ips), self.root / "logs" / f"{name}.log")
                self.pods[name] = pod
            if pod.process is None or pod.process.returncode is not None:
                if pod.process is not None and time.monotonic() - pod.started_at < min(10.0, 0.5 * 2**pod.restarts):
                    continue  # crash-loop back-off
                if pod.process is not None:
                    pod.restarts += 1
                with contextlib.suppress(NotYet):
                    await self._start(pod)
        await self._services()
        await asyncio.gather(*(self._probe(p) for p in self.pods.values()))
        await self._write_status()

    # --- pods ------------------------------------------------------------------------------------

    def _volume_dirs(self, pod: Pod) -> dict[str, Path]:
        spec = pod.template["spec"]
        dirs: dict[str, Path] = {}
        for vol in spec.get("volumes") or []:
            name = vol["name"]
            if "persistentVolumeClaim" in vol:
                path = self.root / "pvc" / vol["persistentVolumeClaim"]["claimName"]
            else:
                path = self.root / "pods" / pod.name / "volumes" / name
            path.mkdir(parents=True, exist_ok=True)
            if "secret" in vol:
                secret = self.get("v1/secrets", vol["secret"]["secretName"])
                if secret is None:
                    raise NotYet(f"Secret {vol['secret']['secretName']}")
                for key, value in _secret_data(secret).items():
                    (path / key).write_bytes(value)
            if "configMap" in vol:
                cm = self.get("v1/configmaps", vol["configMap"]["name"])
                if cm is None:
                    raise NotYet(f"ConfigMap {vol['configMap']['name']}")
                for key, text in (cm.get("data") or {}).items():
                    (path / key).write_text(text)
            dirs[name] = path
        return dirs

    def _env_value(self, pod: Pod, item: dict[str, Any]) -> str | None:
        if "value" in item:
            return str(item["value"])
        source = item.get("valueFrom") or {}
        if "fieldRef" in source:
            path = source["fieldRef"]["fieldPath"]
            return {"metadata.name": pod.name, "metadata.namespace": self.ns, "status.podIP": pod.ip}.get(path)
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            secret = self.get("v1/secrets", ref["name"])
            if secret is None or ref["key"] not in _secret_data(secret):
                raise NotYet(f"Secret {ref['name']} key {ref['key']}")
            return _secret_data(secret)[ref["key"]].decode()
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            cm = self.get("v1/configmaps", ref["name"])
            if cm is None or ref["key"] not in (cm.get("data") or {}):
                raise NotYet(f"ConfigMap {ref['name']} key {ref['key']}")
            return str(cm["data"][ref["key"]])
        return None

    def _rewrite(self, text: str, pod: Pod, mounts: list[tuple[str, Path]]) -> str:
        """What the process sees instead of the pod's network and filesystem: mount paths → the
        volume directories, `0.0.0.0` → the pod IP, `<svc>.<ns>.svc` → the Service's cluster IP."""
        for mount_path, directory in mounts:
            if text == mount_path or text.startswith(mount_path + "/"):
                text = str(directory) + text[len(mount_path) :]
                break
            text = text.replace("=" + mount_path + "/", "=" + str(directory) + "/")
        text = text.replace("0.0.0.0", pod.ip)

        def dns(m: re.Match[str]) -> str:
            proxy = self.proxies.get(m.group(1)) if m.group(3) == self.ns else None
            return proxy.ip if proxy is not None else m.group(0)

        return SERVICE_DNS.sub(dns, text)

    async def _start(self, pod: Pod) -> None:
        await self._services()  # so that DNS names of Services that exist resolve
        spec = pod.template["spec"]
        (container,) = spec["containers"]
        dirs = self._volume_dirs(pod)
        mounts = sorted(
            ((m["mountPath"], dirs[m["name"]]) for m in container.get("volumeMounts") or []),
            key=lambda m: -len(m[0]),
        )
        env = {"PATH": f"{self.bin_dir}:{os.environ.get('PATH', '')}", "HOME": str(self.root / "pods" / pod.name)}
        for item in container.get("env") or []:
            value = self._env_value(pod, item)
            if value is not None:
                env[item["name"]] = self._rewrite(value, pod, mounts)
        if spec.get("automountServiceAccountToken"):
            env["KUBECONFIG"] = str(self.kubeconfig)
        argv = [
            self._rewrite(a, pod, mounts) for a in [*(container.get("command") or []), *(container.get("args") or [])]
        ]
        exe = self.bin_dir / argv[0]
        argv[0] = str(exe) if exe.exists() else argv[0]
        pod.ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if p.get("name")}
        pod.log.parent.mkdir(parents=True, exist_ok=True)
        log = pod.log.open("ab")
        log.write(f"--- start {time.strftime('%H:%M:%S')}: {' '.join(argv)}\n".encode())
        log.flush()
        pod.ready, pod.failures, pod.successes, pod.next_probe = False, 0, 0, 0.0
        pod.started_at = time.monotonic()
        pod.process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=log, stderr=log, cwd=str(self.root), start_new_session=True
        )
        log.close()

    async def _kill(self, pod: Pod) -> None:
        proc = pod.process
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    async def _probe(self, pod: Pod) -> None:
        """readinessProbe.httpGet as the kubelet runs it: every periodSeconds, ready after
        successThreshold successes, not ready after failureThreshold failures in a row."""
        if pod.process is None or pod.process.returncode is not None:
            pod.ready, pod.failures, pod.successes = False, 0, 0
            return
        (container,) = pod.template["spec"]["containers"]
        probe_spec = container.get("readinessProbe") or {}
        probe = probe_spec.get("httpGet")
        if probe is None:
            pod.ready = True
            return
        now = time.monotonic()
        period = float(probe_spec.get("periodSeconds", 10))
        if now < pod.started_at + float(probe_spec.get("initialDelaySeconds", 0)) or now < pod.next_probe:
            return
        pod.next_probe = now + (period if pod.ready else min(period, 1.0))  # a starting pod: checked sooner
        port = probe["port"]
        port = pod.ports.get(port, 0) if isinstance(port, str) else int(port)
        assert self._http is not None
        timeout = aiohttp.ClientTimeout(total=float(probe_spec.get("timeoutSeconds", 1)))
        try:
            async with self._http.get(f"http://{pod.ip}:{port}{probe.get('path', '/')}", timeout=timeout) as r:
                ok = 200 <= r.status < 400
        except (aiohttp.ClientError, TimeoutError, OSError):
            ok = False
        if ok:
            pod.failures, pod.successes = 0, pod.successes + 1
            if pod.successes >= int(probe_spec.get("successThreshold", 1)):
                pod.ready = True
        else:
            pod.failures, pod.successes = pod.failures + 1, 0
            if pod.failures >= int(probe_spec.get("failureThreshold", 3)) or not pod.ready:
                pod.ready = False

    async def _write_status(self) -> None:
        for resource in WORKLOADS:
            for w in self.objects(resource):
                name = w["metadata"]["name"]
                pods = [p for p in self.pods.values() if p.workload == (resource, name)]
                counts = (len(pods), sum(1 for p in pods if p.ready))
                if self.status_written.get((resource, name)) == counts:
                    continue
                status = {"replicas": counts[0], "readyReplicas": counts[1], "availableReplicas": counts[1]}
                group = resource.rsplit("/", 1)[0]
                url = f"/apis/{group}/namespaces/{self.ns}/{resource.rsplit('/', 1)[1]}/{name}/status"
                await self.api.patch(url, json={"status": status})
                self.status_written[(resource, name)] = counts

    # --- services (kube-proxy and DNS) -----------------------------------------------------------

    async def _services(self) -> None:
        for svc in self.objects("v1/services"):
            spec = svc.get("spec") or {}
            name = svc["metadata"]["name"]
            if spec.get("clusterIP") == "None" or not spec.get("selector"):
                continue
            proxy = self.proxies.setdefault(name, Proxy(next(_cluster_ips)))
            if spec.get("clusterIP") != proxy.ip:  # allocated as the API server would
                await self.api.patch(
                    f"/api/v1/namespaces/{self.ns}/services/{name}", json={"spec": {"clusterIP": proxy.ip}}
                )
            for port in spec.get("ports") or []:
                number = int(port["port"])
                if number not in proxy.servers:
                    proxy.servers[number] = await asyncio.start_server(
                        lambda r, w, s=name, p=port: self._forward(r, w, s, p), proxy.ip, number
                    )

    def backend(self, service: str) -> tuple[str, int] | None:
        """A ready pod behind a Service and the port its targetPort names (first by name)."""
        svc = self.get("v1/services", service)
        if svc is None:
            return None
        selector = (svc.get("spec") or {}).get("selector") or {}
        port = (svc["spec"].get("ports") or [{}])[0]
        return self._backend(selector, port)

    def _backend(self, selector: dict[str, str], port: dict[str, Any]) -> tuple[str, int] | None:
        target = port.get("targetPort", port.get("port"))
        for pod in sorted(self.pods.values(), key=lambda p: p.name):
            if pod.ready and pod.labels.items() >= selector.items():
                number = pod.ports.get(target) if isinstance(target, str) else int(target)
                if number:
                    return pod.ip, number
        return None

    async def _forward(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, service: str, port: dict[str, Any]
    ) -> None:
        svc = self.get("v1/services", service)
        found = self._backend((svc or {}).get("spec", {}).get("selector") or {}, port) if svc else None
        if found is None:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*found)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def service_url(self, service: str, scheme: str = "http") -> str:
        """`kubectl port-forward svc/<service>`: the Service's address as seen from the test."""
        svc = self.get("v1/services", service)
        assert svc is not None, f"no Service {service}"
        return f"{scheme}://{self.proxies[service].ip}:{svc['spec']['ports'][0]['port']}"


def _secret_data(secret: dict[str, Any]) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
    out.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
    return out
