"""What every service process shares: logging, uvloop, NATS connection, health and metrics HTTP,
and shutdown on SIGTERM/SIGINT. Services stay small by leaning on this."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("conclavium")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if extra:
            out.update(extra)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


LOG_FORMATS = ("json", "plain")
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: str = "info", fmt: str | None = None) -> None:
    """Log to stderr as JSON lines, or as plain text when `fmt` (default: CONCLAVIUM_LOG_FORMAT,
    the chart's `logFormat`) is `plain`."""
    chosen = (fmt or os.environ.get("CONCLAVIUM_LOG_FORMAT") or "json").lower()
    if chosen not in LOG_FORMATS:
        raise SystemExit(f"CONCLAVIUM_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {chosen!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if chosen == "json" else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("nats").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def service_arguments(prog: str, description: str | None, name: str | None = None) -> argparse.ArgumentParser:
    """A parser with the flags every service shares (each also read from its environment variable,
    as the chart sets them): ledger id, NATS URL, stream replicas, log level and, for node
    processes, the node name."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--ledger", default=os.environ.get("CONCLAVIUM_LEDGER", "local"))
    if name is not None:
        p.add_argument("--name", default=os.environ.get("CONCLAVIUM_NODE_NAME", name))
    p.add_argument("--nats-url", default=os.environ.get("CONCLAVIUM_NATS_URL", "nats://127.0.0.1:4222"))
    p.add_argument("--stream-replicas", type=int, default=int(os.environ.get("CONCLAVIUM_STREAM_REPLICAS", "1")))
    p.add_argument("--log-level", default=os.environ.get("CONCLAVIUM_LOG_LEVEL", "info"))
    return p


def install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def nats_servers(url: str) -> list[str]:
    """The servers of a `--nats-url` value: one URL or several, comma-separated."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect_nats(url: str, name: str) -> nats.NATS:
    """Connect and keep reconnecting for ever: a NATS restart must need no manual step.
    `url` may list several servers of one cluster, comma-separated: they are tried in that order
    (list the member's own server first), and a server that stops answering pings for about
    9 s (a partition sends no TCP reset) is left for the next one.
    Credentials and a CA come from CONCLAVIUM_NATS_CREDS / CONCLAVIUM_NATS_CA (file paths)."""

    async def on_error(e: Exception) -> None:
        log.warning("nats error: %s", e)

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    options: dict[str, Any] = {}
    if os.environ.get("CONCLAVIUM_NATS_CREDS"):
        options["user_credentials"] = os.environ["CONCLAVIUM_NATS_CREDS"]
    if os.environ.get("CONCLAVIUM_NATS_CA"):
        import ssl

        options["tls"] = ssl.create_default_context(cafile=os.environ["CONCLAVIUM_NATS_CA"])
    return await nats.connect(
        **options,
        servers=nats_servers(url),
        dont_randomize=True,
        ping_interval=3,
        max_outstanding_pings=3,
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        allow_reconnect=True,
        connect_timeout=5,
        error_cb=on_error,
        disconnected_cb=on_disconnect,
        reconnected_cb=on_reconnect,
        pending_size=64 * 1024 * 1024,
    )


def redis_from_url(url: str, **options: Any) -> Any:
    """A redis.asyncio client for `url` with the password from CONCLAVIUM_REDIS_PASSWORD (the
    chart's `redis.passwordSecret`), so every service honours the same Redis settings."""
    import redis.asyncio as aioredis

    password = os.environ.get("CONCLAVIUM_REDIS_PASSWORD") or None
    return aioredis.from_url(url, password=password, **options)


async def metrics_handler(_: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(REGISTRY))
    resp.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return resp


def health_routes(app: web.Application, ready: Callable[[], tuple[bool, str]]) -> None:
    """`/healthz` answers while the process runs; `/readyz` says whether it can do its job."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = ready()
        return web.json_response(
            {"status": "ready" if ok else "not_ready", "reason": reason}, status=200 if ok else 503
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)


async def serve_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `main(stop)` until it returns; SIGTERM/SIGINT set `stop` so it can drain and flush."""
    install_uvloop()

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


def now_ms() -> int:
    return int(time.time() * 1000)
