"""What a protocol's router may use of the gateway, and what it provides."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from conclavium.block import Entry
from conclavium.crypto.keys import PublicKey


class GatewayCore(Protocol):
    cfg: Any  # GatewayConfig: ledger, verify_signatures, ...
    _keys: dict[str, PublicKey]  # participant keys, when the gateway checks signatures

    async def _read_json(self, request: web.Request, limit: int) -> Any: ...

    def _admit(self, n: int) -> None: ...

    async def _submit_entries(self, entries: list[Entry]) -> list[str]: ...

    async def ask_fresh(self, req: dict[str, Any], min_height: int) -> dict[str, Any]: ...

    def _relay(self, answer: dict[str, Any]) -> web.Response: ...

    def min_height(self, request: web.Request) -> int: ...


class ProtocolRoutes:
    """A protocol's router. `name` is its application's name (`conclavium.apps`)."""

    name: str

    def __init__(self, gateway: GatewayCore) -> None:
        self.gw = gateway

    def add_submission_routes(self, r: web.UrlDispatcher) -> None:
        """Routes that take this protocol's entries into the intake."""

    async def close(self) -> None:
        """Release what the router holds open (long-lived connections) when the gateway stops."""

    def add_query_routes(self, r: web.UrlDispatcher) -> None:
        """Routes that read this protocol's state."""
