"""One router per protocol: each protocol adds its own routes to the gateway (its submissions, and
its reads and queries); the gateway's own routes (status, receipts, governance, service, health)
are shared. A later protocol adds a module here and a line to `PROTOCOLS`, nothing else.
"""

from __future__ import annotations

from aiohttp import web

from .base import GatewayCore, ProtocolRoutes
from .kv import KeyValueRoutes

PROTOCOLS: dict[str, type[ProtocolRoutes]] = {KeyValueRoutes.name: KeyValueRoutes}


def routers(gateway: GatewayCore) -> list[ProtocolRoutes]:
    return [cls(gateway) for cls in PROTOCOLS.values()]


def add_submission_routes(r: web.UrlDispatcher, gateway: GatewayCore) -> None:
    for router in routers(gateway):
        router.add_submission_routes(r)


def add_query_routes(r: web.UrlDispatcher, gateway: GatewayCore) -> None:
    for router in routers(gateway):
        router.add_query_routes(r)


__all__ = ["PROTOCOLS", "GatewayCore", "ProtocolRoutes", "add_query_routes", "add_submission_routes"]
