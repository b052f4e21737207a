"""A whole consortium on one machine: `conclavium local up`, the demo, the tests and the benchmark.

Creates the members' and users' keys, the genesis configuration, starts an embedded NATS
(JetStream), Redis when `redis-server` is installed, the executors, the sequencer(s) and the
gateway, each as its own process with its data under `DIR/nodes/<name>/` and its log under
`DIR/logs/`, waits until the ledger commits, and writes `DIR/local.json`. A supervisor restarts
any process that dies, as Kubernetes would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from conclavium.apps import KV
from conclavium.crypto.keys import PrivateKey
from conclavium.governance.constitution import default_constitution
from conclavium.keyfiles import write_identity
from conclavium.local.processes import Process, free_port, nats_process, redis_process, service_command
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from conclavium.sdk.client import Client

log = logging.getLogger("conclavium.local")

MEMBER_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
USER_NAMES = ["user0", "user1", "user2", "user3", "user4"]


@dataclass
class NetworkOptions:
    ledger: str = "local"
    executors: int = 3
    members: int = 3
    users: int = 2
    sequencers: int = 1
    sequencer_lease_ttl_s: float = 2.0
    redis: bool | None = None  # None: use Redis when redis-server is installed
    block_interval_ms: float = 5.0
    gateway_verify_signatures: bool = False
    gateway_max_uncommitted: int | None = None  # None: the gateway's own default
    verify_threads: int = 2
    log_level: str = "info"
    snapshot_every: int = 100_000  # executor snapshots after this many entries
    open_service: bool = True  # members vote the service open, as the README's walk-through does
    genesis_config: dict[str, Any] | None = None  # merged into the genesis configuration
    executor_args: dict[int, list[str]] = field(default_factory=dict)  # extra arguments, by executor index


def _http_ok(url: str) -> bool:
    try:
        with urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (URLError, OSError, ValueError):
        return False


class LocalNetwork:
    def __init__(self, directory: Path, options: NetworkOptions | None = None) -> None:
        self.dir = directory.resolve()
        self.opt = options or NetworkOptions()
        self.procs: dict[str, Process] = {}
        self.nats_url = ""
        self.redis_url: str | None = None
        self.gateway_url = ""
        self.members: list[dict[str, str]] = []
        self.users: list[dict[str, str]] = []

    # --- set-up ----------------------------------------------------------------------------------

    def _identities(self) -> None:
        keys = self.dir / "keys"
        for kind, names, count, out in (
            ("member", MEMBER_NAMES, self.opt.members, self.members),
            ("user", USER_NAMES, self.opt.users, self.users),
        ):
            for name in names[:count]:
                prefix = keys / name
                if not Path(f"{prefix}.key").exists():
                    write_identity(prefix, name)
                out.append({"name": name, "kind": kind, "key": f"keys/{name}.key", "cert": f"keys/{name}.cert.pem"})

    def _genesis(self) -> Path:
        path = self.dir / "genesis.json"
        if path.exists():
            return path

        def rows(people: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [{"name": p["name"], "public_key": (self.dir / p["cert"]).read_text(), "weight": 1} for p in people]

        genesis = {
            "ledger": self.opt.ledger,
            "members": rows(self.members),
            "users": rows(self.users),
            "node_policy": {"environment": "development", "platforms": ["virtual"]},
            "measurements": [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}],
            "constitution": {**default_constitution(), "auto_trust_nodes": True},
            "tx_validity_ms": 120_000,
            "clock_tolerance_ms": 30_000,
            **(self.opt.genesis_config or {}),
        }
        path.write_text(json.dumps(genesis, indent=2))
        return path

    def _plan(self) -> None:
        logs, nodes = self.dir / "logs", self.dir / "nodes"
        nats = nats_process(nodes / "nats", logs)
        self.procs["nats"] = nats
        self.nats_url = f"nats://127.0.0.1:{nats.port}"
        use_redis = self.opt.redis
        if use_redis is not False:
            redis = redis_process(nodes / "redis", logs)
            if redis is None and use_redis:
                raise RuntimeError("redis-server is not installed")
            if redis is not None:
                self.procs["redis"] = redis
                self.redis_url = f"redis://127.0.0.1:{redis.port}/0"
        common = ["--ledger", self.opt.ledger, "--nats-url", self.nats_url, "--log-level", self.opt.log_level]
        genesis = self._genesis()
        for i in range(self.opt.executors):
            name = f"executor-{i}"
            port = free_port()
            argv = service_command("conclavium-executor", "services.executor.main") + common
            argv += ["--name", name, "--data-dir", str(nodes / name), "--http-port", str(port)]
            argv += ["--verify-threads", str(self.opt.verify_threads), "--snapshot-every", str(self.opt.snapshot_every)]
            if i == 0:
                argv += ["--genesis", str(genesis)]
            argv += self.opt.executor_args.get(i, [])
            self.procs[name] = Process(name, argv, logs / f"{name}.log", port=port)
        for i in range(self.opt.sequencers):
            name = f"sequencer-{i}"
            port = free_port()
            argv = service_command("conclavium-sequencer", "services.sequencer.main") + common
            argv += ["--name", name, "--http-port", str(port), "--block-interval-ms", str(self.opt.block_interval_ms)]
            argv += ["--lease-ttl", str(self.opt.sequencer_lease_ttl_s)]
            self.procs[name] = Process(name, argv, logs / f"{name}.log", port=port)
        port = free_port()
        argv = service_command("conclavium-attestation", "services.attestation.main")
        argv += ["--http-host", "127.0.0.1", "--http-port", str(port), "--nats-url", self.nats_url]
        argv += ["--key", str(nodes / "attestation" / "signing.pem")]
        if self.redis_url:
            argv += ["--redis-url", self.redis_url]
        (nodes / "attestation").mkdir(parents=True, exist_ok=True)
        self.procs["attestation"] = Process("attestation", argv, logs / "attestation.log", port=port)
        port = free_port()
        argv = service_command("conclavium-gateway", "services.gateway.main") + common + ["--port", str(port)]
        if self.redis_url:
            argv += ["--redis-url", self.redis_url]
        if self.opt.gateway_verify_signatures:
            argv += ["--verify-signatures"]
        if self.opt.gateway_max_uncommitted is not None:
            argv += ["--max-uncommitted", str(self.opt.gateway_max_uncommitted)]
        self.procs["gateway"] = Process("gateway", argv, logs / "gateway.log", port=port)
        self.gateway_url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60.0) -> None:
        """Start everything and return once every executor signs and the gateway is ready."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._identities()
        self._plan()
        for name in ("nats", "redis"):
            if name in self.procs:
                self.procs[name].start()
                self.procs[name].wait_ready()
        for p in self.procs.values():
            if not p.alive():
                p.start()
        for p in self.procs.values():
            p.wait_ready()
        self.wait_ready(timeout)
        self.write_service_cert()
        if self.opt.open_service:
            self.open_service()
        self.write_local_json()

    def member_key(self, index: int) -> PrivateKey:
        return PrivateKey.from_file(str(self.dir / self.members[index]["key"]))

    def open_service(self, timeout: float = 30.0) -> None:
        """A majority of members vote `open_service`; until then only governance is accepted."""
        if self.service().get("status") == "Open":
            return

        async def vote() -> None:
            clients = [
                Client(self.gateway_url, self.member_key(i), ledger=self.opt.ledger) for i in range(len(self.members))
            ]
            try:
                proposal = await clients[0].propose([{"name": "open_service", "args": {}}])
                await clients[0].wait(proposal["tx_hash"], timeout=timeout)
                for c in clients[: len(clients) // 2 + 1]:
                    ballot = await c.vote(proposal["proposal_id"], approve=True)
                    await c.wait(ballot["tx_hash"], timeout=timeout)
            finally:
                for c in clients:
                    await c.close()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, vote()).result()
        deadline = time.monotonic() + 5
        while self.service().get("status") != "Open":
            if time.monotonic() > deadline:
                raise RuntimeError("the members' vote did not open the service")
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = [n for n in self.procs if n.startswith("executor-")]
        while time.monotonic() < deadline:
            pending = [n for n in pending if not _http_ok(f"http://127.0.0.1:{self.procs[n].port}/readyz")]
            if not pending and _http_ok(f"{self.gateway_url}/readyz"):
                return
            for p in self.procs.values():
                if p.proc is not None and not p.alive():
                    raise RuntimeError(f"{p.name} exited during start-up; the end of {p.log_path}:\n{p.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"network not ready after {timeout}s (waiting for {pending or ['gateway']})")

    def service(self) -> dict[str, Any]:
        with urlopen(f"{self.gateway_url}/v1/service", timeout=5) as r:
            return dict(json.loads(r.read()))

    def write_service_cert(self) -> None:
        (self.dir / "service_cert.pem").write_text(self.service()["service_cert"])

    def write_local_json(self) -> None:
        doc = {
            "ledger": self.opt.ledger,
            "gateway_url": self.gateway_url,
            "nats_url": self.nats_url,
            **({"redis_url": self.redis_url} if self.redis_url else {}),
            "service_cert": "service_cert.pem",
            # One section per application: where its transactions go and how its state is read.
            "applications": {
                KV: {
                    "submit": f"{self.gateway_url}/v1/transactions",
                    "batch": f"{self.gateway_url}/v1/transactions/batch",
                    "read": f"{self.gateway_url}/v1/state/{{map}}/{{key}}",
                    "query": f"{self.gateway_url}/v1/queries",
                },
            },
            "members": [{k: p[k] for k in ("name", "key", "cert")} for p in self.members],
            "users": [{k: p[k] for k in ("name", "key", "cert")} for p in self.users],
            "processes": [
                {"name": p.name, "pid": p.pid, "port": p.port, "log": str(p.log_path.relative_to(self.dir))}
                for p in self.procs.values()
            ],
        }
        tmp = self.dir / "local.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(self.dir / "local.json")

    # --- running ---------------------------------------------------------------------------------

    def supervise_once(self) -> list[str]:
        """Restart dead processes; returns their names."""
        restarted = []
        for p in self.procs.values():
            if p.proc is not None and not p.alive():
                log.warning("%s exited with %s; restarting", p.name, p.proc.returncode)
                p.restart()
                restarted.append(p.name)
        if restarted:
            self.write_local_json()
        return restarted

    def stop(self) -> None:
        order = ["gateway", "attestation"] + [n for n in self.procs if n.startswith("sequencer-")]
        order += [n for n in self.procs if n.startswith("executor-")] + ["redis", "nats"]
        for name in order:
            if name in self.procs:
                self.procs[name].stop()


def start_network(directory: Path, **options: Any) -> LocalNetwork:
    """Start a local network with `NetworkOptions(**options)`; stops what started if it fails."""
    net = LocalNetwork(directory, NetworkOptions(**options))
    try:
        net.start(timeout=90)
    except BaseException:
        net.stop()
        raise
    return net
