"""`conclavium-gateway`: the HTTP API."""

from __future__ import annotations

import os

from aiohttp import web

from conclavium.runtime import install_uvloop, service_arguments, setup_logging

from .app import Gateway, GatewayConfig
from .limits import MAX_HTTP_LINE


def parse_args(argv: list[str] | None = None) -> GatewayConfig:
    p = service_arguments("conclavium-gateway", __doc__)
    p.add_argument("--redis-url", default=os.environ.get("CONCLAVIUM_REDIS_URL") or None)
    p.add_argument("--host", default=os.environ.get("CONCLAVIUM_HTTP_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CONCLAVIUM_HTTP_PORT", "8000")))
    p.add_argument(
        "--verify-signatures",
        action="store_true",
        help="refuse badly signed transactions early (executors verify anyway)",
    )
    p.add_argument("--status-ttl", type=int, default=24 * 3600, help="seconds a status stays in the cache")
    p.add_argument(
        "--max-uncommitted",
        type=int,
        default=int(os.environ.get("CONCLAVIUM_GATEWAY_MAX_UNCOMMITTED", GatewayConfig.max_uncommitted)),
        help="answer 503 overloaded beyond this many accepted transactions awaiting commit (0: no bound)",
    )
    p.add_argument(
        "--max-queue-seconds",
        type=float,
        default=float(os.environ.get("CONCLAVIUM_GATEWAY_MAX_QUEUE_SECONDS", GatewayConfig.max_queue_s)),
        help="also answer 503 beyond this many seconds of commits at the recent commit rate (0: count only)",
    )
    p.add_argument(
        "--sawtooth-hold-seconds",
        type=float,
        default=float(os.environ.get("CONCLAVIUM_GATEWAY_SAWTOOTH_HOLD_SECONDS", GatewayConfig.sawtooth_hold_s)),
        help="drop a Sawtooth batch held this long for its family's transaction processor",
    )
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    return GatewayConfig(
        ledger=a.ledger,
        nats_url=a.nats_url,
        redis_url=a.redis_url,
        host=a.host,
        port=a.port,
        verify_signatures=a.verify_signatures,
        status_ttl_s=a.status_ttl,
        stream_replicas=a.stream_replicas,
        max_uncommitted=a.max_uncommitted,
        max_queue_s=a.max_queue_seconds,
        sawtooth_hold_s=a.sawtooth_hold_seconds,
    )


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    install_uvloop()
    web.run_app(
        Gateway(cfg).build_app(),
        host=cfg.host,
        port=cfg.port,
        access_log=None,
        print=None,
        max_line_size=MAX_HTTP_LINE,
        max_field_size=MAX_HTTP_LINE,
    )


if __name__ == "__main__":
    main()
