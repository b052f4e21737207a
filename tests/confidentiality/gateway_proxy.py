"""A hostile gateway for the client-trust tests: an aiohttp server in front of the real gateway
whose handler may rewrite what it relays, the user key and service certificate a client pins, and
what one node holds, for the tests that attack with it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from conclavium.attestation.providers import VirtualSealing
from conclavium.crypto.keys import PrivateKey
from conclavium.local.network import LocalNetwork
from services.executor.enclave import LedgerSecrets, NodeKeys, SealedStore


@asynccontextmanager
async def serving(handle: Callable[[web.Request], Awaitable[web.StreamResponse]], port: int) -> AsyncIterator[None]:
    """Serve every method and path with `handle` on 127.0.0.1:`port` until the block ends."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield
    finally:
        await runner.cleanup()


def user_key(network: LocalNetwork) -> PrivateKey:
    return PrivateKey.from_file(str(network.dir / network.users[0]["key"]))


def service_cert(network: LocalNetwork) -> str:
    return (network.dir / "service_cert.pem").read_text()


def node_material(net: LocalNetwork, name: str) -> tuple[NodeKeys, LedgerSecrets]:
    """Everything node `name` holds, as an attacker who owns its host and TEE would: node keys and
    the ledger secrets with the service key (the virtual platform's sealing key is on the disk)."""
    d = net.dir / "nodes" / name
    store = SealedStore(d, net.opt.ledger, VirtualSealing(d))
    keys = NodeKeys.load_or_create(store)
    secrets = LedgerSecrets.load(store, keys.id)
    assert secrets is not None
    return keys, secrets
