"""One router per protocol: each protocol adds its own routes to the gateway (its submissions, and
its reads and queries); the gateway's own routes (status, receipts, governance, service, health)
are shared. A later protocol adds a module here and a line to `PROTOCOLS`, nothing else.
"""

from __future__ import annotations

from aiohttp import web

from .base import GatewayCore, ProtocolRoutes
from .eth import EthereumRoutes
from .kv import KeyValueRoutes
from .notary import NotaryRoutes
from .sawtooth import SawtoothRoutes

PROTOCOLS: dict[str, type[ProtocolRoutes]] = {
    KeyValueRoutes.name: KeyValueRoutes,
    NotaryRoutes.name: NotaryRoutes,
    EthereumRoutes.name: EthereumRoutes,
    SawtoothRoutes.name: SawtoothRoutes,
}


def routers(gateway: GatewayCore) -> list[ProtocolRoutes]:
    return [cls(gateway) for cls in PROTOCOLS.values()]


def add_submission_routes(r: web.UrlDispatcher, gateway: GatewayCore) -> list[ProtocolRoutes]:
    """Returns the routers, which the gateway closes when it stops."""
    made = routers(gateway)
    for router in made:
        router.add_submission_routes(r)
    return made


def add_query_routes(r: web.UrlDispatcher, made: list[ProtocolRoutes]) -> None:
    """The same routers' reads: a router's submissions and reads share its state (Sawtooth's
    memory of the batches this gateway accepted, which its statuses answer PENDING)."""
    for router in made:
        router.add_query_routes(r)


__all__ = ["PROTOCOLS", "GatewayCore", "ProtocolRoutes", "add_query_routes", "add_submission_routes"]
