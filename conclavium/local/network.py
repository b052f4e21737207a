"""A whole consortium on one machine: `conclavium local up`, the demo, the tests and the benchmark.

Creates the members' and users' keys, the genesis configuration, starts an embedded NATS
(JetStream; or a cluster of servers with R3 streams), Redis when `redis-server` is installed, the
executors, the sequencer(s) and the gateway(s), each as its own process (on this machine's loopback,
or one network namespace per member for the multi-host tests) with its data under `DIR/nodes/<name>/` and its log under
`DIR/logs/`, has each executor endorsed by its member (executor-i belongs to member i modulo the
members, unless `executor_members` says otherwise; the genesis' consortium identity, signed by
every founder, is `DIR/consortium.json`), waits until the ledger commits, and writes
`DIR/local.json`. A supervisor restarts
any process that dies, as Kubernetes would.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import Request, urlopen

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from conclavium import consortium, quorum
from conclavium.apps import KV
from conclavium.crypto.keys import PrivateKey
from conclavium.eth import chain as eth_chain
from conclavium.eth import dev_accounts
from conclavium.governance.constitution import default_constitution
from conclavium.keyfiles import write_encryption_key, write_identity
from conclavium.local import sawtooth as saw
from conclavium.local.processes import (
    NatsServerPlan,
    Process,
    free_port,
    nats_cluster_process,
    nats_process,
    plan_nats_cluster,
    redis_process,
    service_command,
)
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from conclavium.notary import NOTARY_APP
from conclavium.sdk.client import Client

log = logging.getLogger("conclavium.local")

MEMBER_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]
USER_NAMES = ["user0", "user1", "user2", "user3", "user4"]


@dataclass
class Host:
    """Where one member's processes run: this machine's loopback, or a network namespace with its
    own address (the multi-host test harness), whose processes are started through `ip netns exec`."""

    name: str
    address: str = "127.0.0.1"
    netns: str | None = None

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv


LOOPBACK = Host("local")


@dataclass
class NetworkOptions:
    ledger: str = "local"
    executors: int = 3
    members: int | None = None  # None: 3, or fewer when fewer executors could not reach a majority
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
    # A JetStream cluster of this many servers (routes between them, streams and the KV bucket at
    # min(servers, 3) replicas); 1 is the single embedded server with R1 streams.
    nats_servers: int = 1
    # One host per member: member i's NATS server, executors, sequencers and gateway run on
    # hosts[i % len(hosts)]. Implies one NATS server and one gateway per host; no Redis.
    hosts: list[Host] | None = None
    gateways: int = 1
    # Called with the cluster's plan before the servers' configurations are written: a harness
    # routes some links through a proxy it controls.
    nats_routes: Callable[[list[NatsServerPlan]], None] | None = None

    eth: bool = False  # the members vote the Ethereum application on, with funded development accounts
    eth_accounts: int = 5
    eth_chain_id: int = 1337
    # Quorum private transactions (docs/quorum.md; needs `eth`): every executor serves its member's
    # party endpoint; each member gets a party key, registered by governance, and an access token.
    quorum: bool = False
    # Sawtooth families to run (`--sawtooth intkey`): every executor serves a TP endpoint and gets
    # one TP process per family; the members vote the application and the families on.
    sawtooth: list[str] = field(default_factory=list)
    # False: the endpoints are served and the families approved, but no TP is started (an operator,
    # or a test, attaches them by hand at `tp_endpoints`).
    sawtooth_tps: bool = True
    sawtooth_hold_s: float | None = None  # the gateways' --sawtooth-hold-seconds (None: their default)
    executor_members: list[int] | None = None  # the member (index) of each executor; None: i % members
    sign_genesis: bool = True  # False: an unsigned genesis (development, virtual platform only)

    @property
    def stream_replicas(self) -> int:
        return min(self.nats_servers, 3)


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
        self.nats_url = ""  # every server, comma-separated (what `--nats-url` takes)
        self.nats_urls: list[str] = []
        self.nats_plans: dict[str, NatsServerPlan] = {}  # a cluster's servers: addresses and ports
        self.redis_url: str | None = None
        self.gateway_url = ""
        self.gateway_urls: list[str] = []
        self.hosts: list[Host] = list(self.opt.hosts or [LOOPBACK])
        if self.opt.hosts:
            self.opt.nats_servers = len(self.hosts)
            self.opt.gateways = max(self.opt.gateways, len(self.hosts))
            if self.opt.redis:
                raise ValueError("a network on several hosts runs without Redis")
            self.opt.redis = False
        self.members: list[dict[str, str]] = []
        self.users: list[dict[str, str]] = []
        self.eth_accounts: list[dict[str, str]] = []
        self.tp_endpoints: dict[str, str] = {}  # executor name -> the ZeroMQ endpoint its Sawtooth TPs use
        self.party_urls: dict[str, str] = {}  # executor name -> its member's Quorum party endpoint
        self.quorum_parties: list[dict[str, Any]] = []  # per member: endpoint, party key, access token
        if self.opt.members is None:
            self.opt.members = 3 if self.opt.executors >= 2 else 1
        self._endorsing: dict[str, float] = {}  # node id -> when its endorsement was last submitted
        owners = {self._owner_index(i) for i in range(self.opt.executors)}
        if self.opt.executors and len(owners) < consortium.majority(self.opt.members):
            raise ValueError(
                f"{self.opt.executors} executor(s) belong to {len(owners)} of {self.opt.members} members: a commit "
                "needs nodes of a majority of the members"
            )

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
                row = {"name": name, "kind": kind, "key": f"keys/{name}.key", "cert": f"keys/{name}.cert.pem"}
                if kind == "member":  # every member holds a recovery share (docs/recovery.md)
                    if not Path(f"{prefix}.enc.key").exists():
                        write_encryption_key(prefix)
                    row["encryption_key"] = f"keys/{name}.enc.key"
                out.append(row)

    def _genesis(self) -> Path:
        path = self.dir / "genesis.json"
        if path.exists():
            return path

        def rows(people: list[dict[str, str]]) -> list[dict[str, Any]]:
            out = []
            for p in people:
                row = {"name": p["name"], "public_key": (self.dir / p["cert"]).read_text(), "weight": 1}
                if p.get("encryption_key"):
                    row["encryption_key"] = (self.dir / p["encryption_key"]).with_suffix(".pub").read_text().strip()
                out.append(row)
            return out

        genesis = {
            "ledger": self.opt.ledger,
            "members": rows(self.members),
            "users": rows(self.users),
            "node_policy": {"environment": "development", "platforms": ["virtual"]},
            "measurements": [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}],
            "constitution": {**default_constitution(), "auto_trust_nodes": True},
            "tx_validity_ms": 120_000,
            "clock_tolerance_ms": 30_000,
            "recovery_threshold": len(self.members) // 2 + 1,
            **(self.opt.genesis_config or {}),
        }
        if self.opt.sign_genesis and "consortium" not in genesis:
            founders = [
                {k: r[k] for k in ("name", "public_key", "weight", "encryption_key") if r.get(k) is not None}
                for r in genesis["members"]
            ]
            doc = consortium.make_identity(self.opt.ledger, founders, genesis=consortium.genesis_digest(genesis))
            for i in range(len(self.members)):
                doc = consortium.sign(doc, self.member_key(i))
            genesis["consortium"] = doc
            (self.dir / "consortium.json").write_text(json.dumps(doc, indent=2))
        path.write_text(json.dumps(genesis, indent=2))
        return path

    def host_of(self, index: int) -> Host:
        """The host of member `index` (also of the executor, sequencer and gateway with that index)."""
        return self.hosts[index % len(self.hosts)]

    def _nats_url_for(self, index: int) -> str:
        """All servers, the one on the process's own host (or its index's) first: clients try them
        in this order, so each member talks to its own server while it is up."""
        first = index % len(self.nats_urls)
        return ",".join(self.nats_urls[first:] + self.nats_urls[:first])

    def _plan_nats(self, nodes: Path, logs: Path) -> None:
        if self.opt.nats_servers <= 1:
            nats = nats_process(nodes / "nats", logs)
            self.procs["nats"] = nats
            self.nats_urls = [f"nats://127.0.0.1:{nats.port}"]
        else:
            addresses = [self.host_of(i).address for i in range(self.opt.nats_servers)]
            plans = plan_nats_cluster(self.opt.nats_servers, addresses)
            self.nats_plans = {plan.name: plan for plan in plans}
            if self.opt.nats_routes is not None:
                self.opt.nats_routes(plans)
            for i, plan in enumerate(plans):
                host = self.host_of(i)
                self.procs[plan.name] = nats_cluster_process(
                    plan, nodes / plan.name, logs, argv_prefix=host.command([])
                )
            self.nats_urls = [plan.url for plan in plans]
        self.nats_url = ",".join(self.nats_urls)

    def _service(self, name: str, index: int, script: str, module: str, args: list[str], port: int, logs: Path) -> None:
        """A service process on the host of `index`, talking to that host's NATS server first."""
        host = self.host_of(index)
        common = [
            "--ledger",
            self.opt.ledger,
            "--nats-url",
            self._nats_url_for(index),
            "--log-level",
            self.opt.log_level,
        ]
        common += ["--stream-replicas", str(self.opt.stream_replicas)]
        argv = host.command(service_command(script, module) + common + args)
        self.procs[name] = Process(name, argv, logs / f"{name}.log", port=port, host=host.address)

    def owner(self, executor: str) -> int:
        """The index of the member whose node `executor` is: by the number its name ends with
        (executor-4, upgraded-1), through `executor_members` for the network's own executors."""
        number = executor.rpartition("-")[2]
        if not number.isdigit():
            return 0
        if executor.startswith("executor-"):
            return self._owner_index(int(number))
        assert self.opt.members is not None
        return int(number) % self.opt.members

    def _owner_index(self, i: int) -> int:
        chosen = self.opt.executor_members
        assert self.opt.members is not None
        return chosen[i] if chosen is not None and i < len(chosen) else i % self.opt.members

    def endorse_nodes(self, resend_s: float = 5.0) -> list[str]:
        """Each node that asked to join and has no member yet is endorsed by its owner (its name
        says which executor it is); returns the node ids endorsed now. The members of a real
        consortium do this themselves (`conclavium consortium endorse-node`)."""
        try:
            nodes = self.service().get("nodes", [])
        except (URLError, OSError, ValueError):
            return []
        done = []
        now = time.monotonic()
        for node in nodes:
            if node.get("member") or node.get("status") == "Retired" or not node.get("signing_key"):
                continue
            if now - self._endorsing.get(node["id"], -1e9) < resend_s:
                continue
            key = self.member_key(self.owner(node.get("name", "")))
            not_before = int(time.time()) - 60
            doc = consortium.make_node_endorsement(key, self.opt.ledger, node["signing_key"], not_before)
            try:
                post_document(f"{self.gateway_url}/v1/nodes/{node['id']}/endorsement", doc)
            except (URLError, OSError) as e:
                log.warning("could not submit the endorsement of node %s: %s", node["id"][:16], e)
                continue
            self._endorsing[node["id"]] = now
            done.append(node["id"])
        return done

    def _plan(self) -> None:
        logs, nodes = self.dir / "logs", self.dir / "nodes"
        self._plan_nats(nodes, logs)
        use_redis = self.opt.redis
        if use_redis is not False:
            redis = redis_process(nodes / "redis", logs)
            if redis is None and use_redis:
                raise RuntimeError("redis-server is not installed")
            if redis is not None:
                self.procs["redis"] = redis
                self.redis_url = f"redis://127.0.0.1:{redis.port}/0"
        genesis = self._genesis()
        for i in range(self.opt.executors):
            name, port = f"executor-{i}", free_port()
            args = ["--name", name, "--data-dir", str(nodes / name), "--http-port", str(port)]
            args += ["--http-host", self.host_of(i).address]
            args += ["--verify-threads", str(self.opt.verify_threads), "--snapshot-every", str(self.opt.snapshot_every)]
            if i == 0:
                args += ["--genesis", str(genesis)]
            if self.opt.quorum:
                party_port = free_port()
                self.party_urls[name] = f"https://{self.host_of(i).address}:{party_port}"
                args += ["--quorum-host", self.host_of(i).address, "--quorum-port", str(party_port)]
            if self.opt.sawtooth:
                endpoint = f"tcp://{self.host_of(i).address}:{free_port()}"
                self.tp_endpoints[name] = endpoint
                args += ["--sawtooth-tp", endpoint]
            args += self.opt.executor_args.get(i, [])
            self._service(name, i, "conclavium-executor", "services.executor.main", args, port, logs)
            for family in self.opt.sawtooth if self.opt.sawtooth_tps else []:
                tp = f"sawtooth-{family}-{i}"  # the TP of executor-i
                home = nodes / tp
                home.mkdir(parents=True, exist_ok=True)
                argv = self.host_of(i).command(saw.tp_command(family, self.tp_endpoints[name]))
                self.procs[tp] = Process(
                    tp, argv, logs / f"{tp}.log", env={"SAWTOOTH_HOME": str(home)}, host=self.host_of(i).address
                )
        for i in range(self.opt.sequencers):
            name, port = f"sequencer-{i}", free_port()
            args = ["--name", name, "--http-host", self.host_of(i).address, "--http-port", str(port)]
            args += ["--block-interval-ms", str(self.opt.block_interval_ms)]
            args += ["--lease-ttl", str(self.opt.sequencer_lease_ttl_s)]
            self._service(name, i, "conclavium-sequencer", "services.sequencer.main", args, port, logs)
        host, port = self.host_of(0), free_port()
        argv = service_command("conclavium-attestation", "services.attestation.main")
        argv += ["--http-host", host.address, "--http-port", str(port), "--nats-url", self._nats_url_for(0)]
        argv += ["--key", str(nodes / "attestation" / "signing.pem")]
        if self.redis_url:
            argv += ["--redis-url", self.redis_url]
        (nodes / "attestation").mkdir(parents=True, exist_ok=True)
        self.procs["attestation"] = Process(
            "attestation", host.command(argv), logs / "attestation.log", port=port, host=host.address
        )
        for i in range(self.opt.gateways):
            name, port = ("gateway" if i == 0 else f"gateway-{i}"), free_port()
            args = ["--host", self.host_of(i).address, "--port", str(port)]
            if self.redis_url:
                args += ["--redis-url", self.redis_url]
            if self.opt.gateway_verify_signatures:
                args += ["--verify-signatures"]
            if self.opt.gateway_max_uncommitted is not None:
                args += ["--max-uncommitted", str(self.opt.gateway_max_uncommitted)]
            if self.opt.sawtooth_hold_s is not None:
                args += ["--sawtooth-hold-seconds", str(self.opt.sawtooth_hold_s)]
            self._service(name, i, "conclavium-gateway", "services.gateway.main", args, port, logs)
            self.gateway_urls.append(f"http://{self.host_of(i).address}:{port}")
        self.gateway_url = self.gateway_urls[0]

    def nats_names(self) -> list[str]:
        return [n for n in self.procs if n == "nats" or n.startswith("nats-")]

    def gateway_names(self) -> list[str]:
        return [n for n in self.procs if n == "gateway" or n.startswith("gateway-")]

    def start(self, timeout: float = 60.0) -> None:
        """Start everything and return once every executor signs and the gateway is ready."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._identities()
        self._plan()
        first = [*self.nats_names(), "redis"]
        for name in first:
            if name in self.procs:
                self.procs[name].start()
        for name in first:
            if name in self.procs:
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
        if self.opt.eth:
            self.enable_eth()
        if self.opt.sawtooth:
            self.enable_sawtooth()
        if self.opt.quorum:
            self.enable_quorum()
        self.write_local_json()

    def member_key(self, index: int) -> PrivateKey:
        return PrivateKey.from_file(str(self.dir / self.members[index]["key"]))

    def open_service(self, timeout: float = 30.0) -> None:
        """A majority of members vote `open_service`; until then only governance is accepted."""
        if self.service().get("status") == "Open":
            return
        self.vote([{"name": "open_service", "args": {}}], timeout)
        deadline = time.monotonic() + 5
        while self.service().get("status") != "Open":
            if time.monotonic() > deadline:
                raise RuntimeError("the members' vote did not open the service")
            time.sleep(0.1)

    def enable_eth(self, timeout: float = 30.0) -> None:
        """Once per network directory: the members vote the Ethereum application on (any sender
        may transact, gas-free, chain id `eth_chain_id`) and fund the development accounts."""
        path = self.dir / "keys" / "eth-accounts.json"
        if path.exists():
            self.eth_accounts = dev_accounts.load(path)
            return
        accounts = dev_accounts.create(self.dir / "keys" / "eth-accounts.json.tmp", self.opt.eth_accounts)
        balances = {a["address"]: hex(dev_accounts.DEV_BALANCE) for a in accounts}
        self.vote(
            [
                {"name": "set_applications", "args": {"applications": self.applications()}},
                {"name": "set_eth_chain", "args": {"chain_id": self.opt.eth_chain_id, "senders": "open"}},
                {"name": "eth_alloc", "args": {"balances": balances}},
            ],
            timeout,
        )
        (self.dir / "keys" / "eth-accounts.json.tmp").replace(path)
        self.eth_accounts = accounts

    def applications(self) -> list[str]:
        """The applications the options run (what `set_applications` names)."""
        return [
            KV,
            *([eth_chain.APP] if self.opt.eth else []),
            *([saw.APP] if self.opt.sawtooth else []),
            *([quorum.APP] if self.opt.quorum else []),
        ]

    def enable_quorum(self, timeout: float = 30.0) -> None:
        """Once per network directory: a party key per member (a Curve25519 key pair; the private
        halves, which the ledger never uses, in `keys/quorum-parties.json`), owned by the member
        and served by its executors, voted on with the application; then a fresh access token per
        member (signed by the member's key, valid for `quorum.MAX_TOKEN_S`)."""
        path = self.dir / "keys" / "quorum-parties.json"
        if not path.exists():
            pairs = []
            for _ in self.members:
                k = x25519.X25519PrivateKey.generate()
                raw = k.private_bytes(
                    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
                )
                pub = k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                pairs.append(
                    {"public_key": base64.b64encode(pub).decode(), "private_key": base64.b64encode(raw).decode()}
                )
            ids = [self.member_key(i).key_id for i in range(len(self.members))]
            self.vote(
                [
                    {"name": "set_applications", "args": {"applications": self.applications()}},
                    *(
                        {"name": "set_quorum_party", "args": {"public_key": p["public_key"], "owner": m, "member": m}}
                        for p, m in zip(pairs, ids, strict=True)
                    ),
                ],
                timeout,
            )
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(pairs, indent=2))
            tmp.replace(path)
        pairs = json.loads(path.read_text())
        expires = int(time.time()) + quorum.MAX_TOKEN_S - 60
        self.quorum_parties = []
        for i, member in enumerate(self.members):
            served = [n for n in self.party_urls if self.owner(n) == i]
            url = self.party_urls[served[0]] if served else None
            self.quorum_parties.append(
                {
                    "member": member["name"],
                    "public_key": pairs[i]["public_key"],
                    "rpc": url,
                    "tessera": url,
                    "token": quorum.make_token(self.member_key(i), self.opt.ledger, expires),
                    "token_expires": expires,
                }
            )

    def enable_sawtooth(self, timeout: float = 30.0) -> None:
        """The members vote the Sawtooth application and the families of `--sawtooth` on, with any
        signer allowed (`signers: open`, for development, as `--eth` lets any sender transact)."""
        families = [{"name": f, "version": saw.FAMILY_VERSIONS[f]} for f in self.opt.sawtooth]
        actions: list[dict[str, Any]] = [
            {"name": "set_applications", "args": {"applications": self.applications()}},
            {"name": "set_sawtooth_families", "args": {"families": families, "signers": "open"}},
        ]
        self.vote(actions, timeout)

    def vote(self, actions: list[dict[str, Any]], timeout: float = 30.0) -> None:
        """The first member proposes `actions` and a majority of members vote for them."""

        async def vote() -> None:
            clients = [
                Client(self.gateway_url, self.member_key(i), ledger=self.opt.ledger) for i in range(len(self.members))
            ]
            try:
                proposal = await clients[0].propose(actions)
                await clients[0].wait(proposal["tx_hash"], timeout=timeout)
                for c in clients[: len(clients) // 2 + 1]:
                    ballot = await c.vote(proposal["proposal_id"], approve=True)
                    await c.wait(ballot["tx_hash"], timeout=timeout)
            finally:
                for c in clients:
                    await c.close()

        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, vote()).result()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        pending = [n for n in self.procs if n.startswith("executor-")]
        while time.monotonic() < deadline:
            pending = [n for n in pending if not _http_ok(self.url_of(n, "/readyz"))]
            gateway_ready = all(_http_ok(f"{u}/readyz") for u in self.gateway_urls)
            if not pending and gateway_ready:
                return
            if gateway_ready:
                self.endorse_nodes()
            for p in self.procs.values():
                if p.proc is not None and not p.alive():
                    raise RuntimeError(f"{p.name} exited during start-up; the end of {p.log_path}:\n{p.log_tail()}")
            time.sleep(0.2)
        raise TimeoutError(f"network not ready after {timeout}s (waiting for {pending or ['gateway']})")

    def url_of(self, name: str, path: str = "") -> str:
        """The HTTP address of a process's port (health, metrics), from this machine."""
        p = self.procs[name]
        return f"http://{p.host}:{p.port}{path}"

    def service(self) -> dict[str, Any]:
        with urlopen(f"{self.gateway_url}/v1/service", timeout=5) as r:
            return dict(json.loads(r.read()))

    def trust(self) -> dict[str, Any]:
        """What a member hands a client of this network (Client(**net.trust())): the service
        certificate, to seal to, and the consortium identity, to verify commits against."""
        return {
            "service_cert": (self.dir / "service_cert.pem").read_text(),
            "consortium": (self.dir / "consortium.json").read_text(),
        }

    def write_service_cert(self) -> None:
        (self.dir / "service_cert.pem").write_text(self.service()["service_cert"])

    def write_local_json(self) -> None:
        doc = {
            "ledger": self.opt.ledger,
            "gateway_url": self.gateway_url,
            "nats_url": self.nats_url,
            "nats_servers": self.nats_urls,
            "stream_replicas": self.opt.stream_replicas,
            "gateway_urls": self.gateway_urls,
            **({"redis_url": self.redis_url} if self.redis_url else {}),
            "service_cert": "service_cert.pem",
            **({"consortium": "consortium.json"} if (self.dir / "consortium.json").exists() else {}),
            # One section per application: where its transactions go and how its state is read.
            "applications": {
                KV: {
                    "submit": f"{self.gateway_url}/v1/transactions",
                    "batch": f"{self.gateway_url}/v1/transactions/batch",
                    "read": f"{self.gateway_url}/v1/state/{{map}}/{{key}}",
                    "query": f"{self.gateway_url}/v1/queries",
                },
                NOTARY_APP: {
                    "submit": f"{self.gateway_url}/v1/notary/requests",
                    "status": f"{self.gateway_url}/v1/notary/requests/{{hash}}",
                    "who_consumed": f"{self.gateway_url}/v1/notary/who-consumed",
                },
                **(
                    {
                        eth_chain.APP: {
                            "rpc": f"{self.gateway_url}/rpc",
                            "chain_id": self.opt.eth_chain_id,
                            "accounts": self.eth_accounts,
                        }
                    }
                    if self.eth_accounts
                    else {}
                ),
                **(
                    {quorum.APP: {"ca": "service_cert.pem", "parties": self.quorum_parties}}
                    if self.quorum_parties
                    else {}
                ),
                **(
                    {
                        saw.APP: {
                            "rest": self.gateway_url,
                            "families": self.opt.sawtooth,
                            "tp_endpoints": self.tp_endpoints,
                        }
                    }
                    if self.opt.sawtooth
                    else {}
                ),
            },
            "members": [{k: p[k] for k in ("name", "key", "cert", "encryption_key")} for p in self.members],
            "users": [{k: p[k] for k in ("name", "key", "cert")} for p in self.users],
            "processes": [
                {
                    "name": p.name,
                    "pid": p.pid,
                    "host": p.host,
                    "port": p.port,
                    "log": str(p.log_path.relative_to(self.dir)),
                }
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
        # A Sawtooth TP restarts with its executor, as a sidecar does with its pod: the SDK 1.2.5
        # processor cannot register again after its validator restarted (its reconnect path calls
        # asyncio.Task.all_tasks, gone since Python 3.9).
        for name in [n for n in restarted if n.startswith("executor-")]:
            index = name.removeprefix("executor-")
            for tp in [n for n in self.procs if n.startswith("sawtooth-") and n.endswith(f"-{index}")]:
                if tp not in restarted:
                    log.warning("restarting %s with %s", tp, name)
                    self.procs[tp].restart()
                    restarted.append(tp)
        if restarted:
            self.write_local_json()
        return restarted

    def stop(self) -> None:
        order = [n for n in self.procs if n.startswith("sawtooth-")]
        order += [*self.gateway_names(), "attestation"] + [n for n in self.procs if n.startswith("sequencer-")]
        order += [n for n in self.procs if n.startswith("executor-")] + ["redis", *self.nats_names()]
        for name in order:
            if name in self.procs:
                self.procs[name].stop()


def post_document(url: str, document: bytes) -> dict[str, Any]:
    """POST a COSE document to the gateway; raises URLError (HTTPError) on a refusal."""
    req = Request(url, data=document, headers={"Content-Type": "application/cose"}, method="POST")
    with urlopen(req, timeout=5) as r:
        return dict(json.loads(r.read()))


def start_network(directory: Path, **options: Any) -> LocalNetwork:
    """Start a local network with `NetworkOptions(**options)`; stops what started if it fails."""
    net = LocalNetwork(directory, NetworkOptions(**options))
    try:
        net.start(timeout=90)
    except BaseException:
        net.stop()
        raise
    return net
