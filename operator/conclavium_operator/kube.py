"""A small async Kubernetes REST client for the objects the operator creates and reads.

kopf watches and patches the resources it serves, but offers no client for other objects
(Secrets, StatefulSets, ConsortiumNodes). This one is built from the same `kopf.ConnectionInfo`
that the login handler gives kopf, so both talk to the same API server with the same identity.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import kopf

from conclavium_operator import API_VERSION


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API: `/api/v1` or `/apis/<group>/<version>`, and its plural."""

    api_version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        path = f"{base}/namespaces/{namespace}/{self.plural}"
        if name:
            path += f"/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


SECRETS = Kind("v1", "secrets")
CONFIGMAPS = Kind("v1", "configmaps")
SERVICES = Kind("v1", "services")
PVCS = Kind("v1", "persistentvolumeclaims")
STATEFULSETS = Kind("apps/v1", "statefulsets")
PDBS = Kind("policy/v1", "poddisruptionbudgets")
CONSORTIUMS = Kind(API_VERSION, "consortiums")
MEMBERS = Kind(API_VERSION, "consortiummembers")
NODES = Kind(API_VERSION, "consortiumnodes")


OPERATOR_USER_AGENT = "conclavium-operator"


class KubeError(Exception):
    """An API error: HTTP status plus the Status object's reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, message


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if info.insecure:
        return False
    ctx = ssl.create_default_context()
    if info.ca_path:
        ctx.load_verify_locations(cafile=str(info.ca_path))
    elif info.ca_data:
        data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
        if "-----BEGIN" not in data:
            data = base64.b64decode(data).decode()
        ctx.load_verify_locations(cadata=data)
    if info.certificate_path and info.private_key_path:
        ctx.load_cert_chain(str(info.certificate_path), str(info.private_key_path))
    elif info.certificate_data and info.private_key_data:
        # ssl only loads client certificates from files.
        with tempfile.NamedTemporaryFile() as cert, tempfile.NamedTemporaryFile() as key:
            for f, data in ((cert, info.certificate_data), (key, info.private_key_data)):
                raw = data if isinstance(data, bytes) else data.encode()
                f.write(raw if b"-----BEGIN" in raw else base64.b64decode(raw))
                f.flush()
            ctx.load_cert_chain(cert.name, key.name)
    return ctx


class Kube:
    """CRUD on namespaced objects; `apply` is create-or-merge-patch (the operator's idempotency tool)."""

    def __init__(self, info: kopf.ConnectionInfo, timeout: float = 30.0) -> None:
        self.server = info.server.rstrip("/")
        self.token = info.token
        self.headers: dict[str, str] = {"User-Agent": OPERATOR_USER_AGENT}
        if info.token:
            self.headers["Authorization"] = f"Bearer {info.token}"
        elif info.username and info.password:
            raw = f"{info.username}:{info.password}".encode()
            self.headers["Authorization"] = f"Basic {base64.b64encode(raw).decode()}"
        self._ssl = _ssl_context(info)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers, timeout=self._timeout, connector=aiohttp.TCPConnector(ssl=self._ssl)
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        async with self.session.request(method, self.server + path, json=body, headers=headers) as r:
            data = await r.json(content_type=None) if r.content_length != 0 else None
            if r.status >= 400:
                d = data if isinstance(data, dict) else {}
                raise KubeError(r.status, str(d.get("reason", r.reason)), str(d.get("message", "")))
            return data

    async def get(self, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self._call("GET", kind.path(namespace, name)))
        except KubeError as e:
            if e.status == 404:
                return None
            raise

    async def list(self, kind: Kind, namespace: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        path = kind.path(namespace)
        if labels:
            path += "?" + urlencode({"labelSelector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))})
        items = list((await self._call("GET", path)).get("items") or [])
        if labels:  # an emulator may ignore the selector; filtering again is cheap and always right
            items = [
                i for i in items if all((i["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
            ]
        return items

    async def create(self, kind: Kind, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call("POST", kind.path(namespace), body))

    async def patch(
        self, kind: Kind, namespace: str, name: str, patch: dict[str, Any], subresource: str | None = None
    ) -> dict[str, Any]:
        path = kind.path(namespace, name, subresource)
        return dict(await self._call("PATCH", path, patch, "application/merge-patch+json"))

    async def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        """Delete with foreground-independent background propagation; False if it was already gone."""
        try:
            await self._call("DELETE", kind.path(namespace, name), {"propagationPolicy": "Background"})
            return True
        except KubeError as e:
            if e.status == 404:
                return False
            raise

    async def apply(
        self, kind: Kind, namespace: str, body: dict[str, Any], fields: tuple[str, ...] = ("metadata", "spec")
    ) -> dict[str, Any]:
        """Create, or merge-patch `fields` of what exists: safe to repeat, as kopf handlers run at least once.

        Kinds with an immutable spec (PVCs) pass `fields=("metadata",)`.
        """
        name = body["metadata"]["name"]
        try:
            return await self.create(kind, namespace, body)
        except KubeError as e:
            if e.status != 409:
                raise
        return await self.patch(kind, namespace, name, {k: body[k] for k in fields if k in body})
