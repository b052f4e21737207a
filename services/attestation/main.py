"""`conclavium-attestation`: run the attestation verifier over HTTP and (optionally) NATS."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from aiohttp import web

from conclavium.crypto.keys import PrivateKey
from conclavium.runtime import connect_nats, redis_from_url, setup_logging

from .app import SUBJECT, AttestationService, CollateralCache, create_app, nats_handler
from .collateral import CollateralSource, FetchCache

log = logging.getLogger("conclavium.attestation")


def load_or_create_key(path: str | None) -> PrivateKey:
    """Load the service signing key, generating (and saving, mode 0600) an Ed25519 key if absent."""
    if path is None:
        return PrivateKey.generate("Ed25519")
    if os.path.exists(path):
        return PrivateKey.from_file(path)
    key = PrivateKey.generate("Ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.pem)
    return key


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="conclavium-attestation", description=__doc__)
    p.add_argument("--http-host", default=os.environ.get("CONCLAVIUM_HTTP_HOST", "0.0.0.0"))
    p.add_argument("--http-port", type=int, default=int(os.environ.get("CONCLAVIUM_HTTP_PORT", "8090")))
    p.add_argument("--nats-url", default=os.environ.get("CONCLAVIUM_NATS_URL"), help=f"request/reply on {SUBJECT}")
    p.add_argument("--redis-url", default=os.environ.get("CONCLAVIUM_REDIS_URL"), help="cache collateral in Redis")
    p.add_argument(
        "--key",
        default=os.environ.get("CONCLAVIUM_ATTESTATION_SIGNING_KEY"),
        help="service signing key (PEM); generated if the file does not exist",
    )
    p.add_argument(
        "--pcs-url",
        default=os.environ.get("CONCLAVIUM_PCS_URL"),
        help="Intel collateral source: PCS v4 API base (https://api.trustedservices.intel.com), a PCCS or a mirror",
    )
    p.add_argument(
        "--kds-url",
        default=os.environ.get("CONCLAVIUM_KDS_URL"),
        help="AMD collateral source: KDS base (https://kdsintf.amd.com) or a mirror",
    )
    p.add_argument(
        "--collateral-refresh",
        type=float,
        default=float(os.environ.get("CONCLAVIUM_COLLATERAL_REFRESH", "3600")),
        help="seconds a fetched document is served from the cache before it is fetched again",
    )
    p.add_argument("--log-level", default=os.environ.get("CONCLAVIUM_LOG_LEVEL", "info"))
    return p.parse_args(argv)


async def run(args: argparse.Namespace) -> None:
    key = load_or_create_key(args.key)
    redis_client: Any = None
    if args.redis_url:
        # CONCLAVIUM_REDIS_PASSWORD, as the gateway
        redis_client = redis_from_url(args.redis_url, socket_timeout=5, socket_connect_timeout=5)
    import aiohttp

    http = aiohttp.ClientSession()
    source = None
    if args.pcs_url or args.kds_url:
        source = CollateralSource(
            http, FetchCache(redis_client, refresh=args.collateral_refresh), pcs_url=args.pcs_url, kds_url=args.kds_url
        )
    service = AttestationService(key, CollateralCache(redis_client), source=source)
    nc: Any = None

    async def ready() -> bool:
        if nc is not None and not nc.is_connected:
            return False
        if redis_client is not None:
            try:
                await redis_client.ping()
            except Exception:
                return False
        return True

    if args.nats_url:
        # CONCLAVIUM_NATS_CREDS and CONCLAVIUM_NATS_CA, as every service
        nc = await connect_nats(args.nats_url, "conclavium-attestation")

        async def on_msg(msg: Any) -> None:
            await nats_handler(service, msg)

        await nc.subscribe(SUBJECT, queue="conclavium-attestation", cb=on_msg)
    runner = web.AppRunner(create_app(service, ready), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.http_host, args.http_port)
    await site.start()
    log.info("listening on %s:%s key %s", args.http_host, args.http_port, key.key_id)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    if nc is not None:
        with contextlib.suppress(Exception):
            await nc.drain()
    await runner.cleanup()
    await http.close()
    if redis_client is not None:
        await redis_client.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
