"""The gateway's Sawtooth routes: one router serves both a protocol's submissions and its reads, so
that `/batch_statuses` answers PENDING (not UNKNOWN) for a batch this gateway accepted that no
executor has run yet, as `POST /batches` remembered it. (Two router instances, one per kind of
route, each with its own memory, made a status poll made before execution answer UNKNOWN.)"""

from __future__ import annotations

from services.gateway.app import Gateway, GatewayConfig


def test_one_router_serves_a_protocols_submissions_and_reads() -> None:
    gw = Gateway(GatewayConfig(ledger="local", nats_url="nats://127.0.0.1:1"))
    app = gw.build_app()
    (saw,) = [r for r in gw.routers if r.name == "sawtooth"]
    handlers = {(route.method, route.resource.canonical): route.handler for route in app.router.routes()}
    for method, path in (("POST", "/batches"), ("GET", "/batch_statuses"), ("GET", "/batches/{id}")):
        assert handlers[(method, path)].__self__ is saw, (method, path)
