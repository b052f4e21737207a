"""Several hosts on one machine for the multi-host tests: one network namespace per member on a
private bridge, each with its own address, joined by veth pairs; a member is partitioned by taking
its link down. Needs root and `ip netns` (iproute2); `unavailable()` says why not.

Names carry the pid of the test process that made them (`cvmh<pid>-m<i>`, bridge `cvb<pid>`), so a
later run removes what an earlier crashed run left behind without touching a running one's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from conclavium.local.network import Host

_NS = re.compile(r"^cvmh(\d+)-m\d+$")
_BRIDGE = re.compile(r"^cvb(\d+)$")


def ip(*args: str, check: bool = True) -> str:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None when they can)."""
    if os.geteuid() != 0:
        return "the multi-host tests need root (ip netns, veth pairs)"
    if shutil.which("ip") is None:
        return "iproute2 (`ip`) is not installed"
    probe = f"cvmh{os.getpid()}-m99"
    try:
        ip("netns", "add", probe)
    except RuntimeError as e:
        return f"`ip netns add` fails here: {e}"
    ip("netns", "del", probe, check=False)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_all_in(ns: str) -> None:
    for pid in ip("netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def remove_leftovers() -> list[str]:
    """Delete namespaces (and their processes) and bridges of test runs whose process is gone."""
    removed = []
    for line in ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NS.match(name)
        if m and not _alive(int(m.group(1))):
            _kill_all_in(name)
            ip("netns", "del", name, check=False)
            removed.append(name)
    for line in ip("-o", "link", "show", "type", "bridge", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        m = _BRIDGE.match(name)
        if m and not _alive(int(m.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


@dataclass
class Hosts:
    """`count` member hosts on one bridge; this process reaches them through the bridge's address."""

    count: int
    tag: str = field(default_factory=lambda: str(os.getpid()))
    hosts: list[Host] = field(default_factory=list)
    subnet: str = ""

    @property
    def bridge(self) -> str:
        return f"cvb{self.tag}"

    @property
    def gateway_address(self) -> str:
        """This machine's address on the bridge (where the harness's proxies listen)."""
        return f"{self.subnet}.1"

    def _host_link(self, i: int) -> str:
        return f"cvh{self.tag}m{i}"

    def create(self) -> list[Host]:
        remove_leftovers()
        self.subnet = f"10.{200 + int(self.tag) % 50}.{int(self.tag) // 50 % 250}"
        try:
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.gateway_address}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
            for i in range(self.count):
                ns, outside, inside = f"cvmh{self.tag}-m{i}", self._host_link(i), f"cvn{self.tag}m{i}"
                address = f"{self.subnet}.{10 + i}"
                ip("netns", "add", ns)
                ip("link", "add", outside, "type", "veth", "peer", "name", inside)
                ip("link", "set", inside, "netns", ns)
                ip("link", "set", outside, "master", self.bridge)
                ip("link", "set", outside, "up")
                ip("-n", ns, "addr", "add", f"{address}/24", "dev", inside)
                ip("-n", ns, "link", "set", inside, "up")
                ip("-n", ns, "link", "set", "lo", "up")
                self.hosts.append(Host(f"member-{i}", address, ns))
        except BaseException:
            self.destroy()
            raise
        return self.hosts

    def partition(self, index: int) -> None:
        """Cut host `index` off from every other host and from this machine (no TCP reset reaches
        anyone: packets are simply no longer delivered)."""
        ip("link", "set", self._host_link(index), "down")

    def only_through_this_machine(self, index: int) -> None:
        """No direct path between host `index` and the other hosts (an unroutable /32 each way):
        what they say to one another must go through this machine's address on the bridge, where
        the harness's proxies listen. NATS servers learn one another's direct addresses by gossip
        and would otherwise open some route connections around the proxies."""
        for j, other in enumerate(self.hosts):
            if j == index:
                continue
            me = self.hosts[index]
            ip("-n", me.netns or "", "route", "add", "prohibit", f"{other.address}/32")
            ip("-n", other.netns or "", "route", "add", "prohibit", f"{me.address}/32")

    def heal(self, index: int) -> None:
        ip("link", "set", self._host_link(index), "up")

    def kill_host(self, index: int) -> None:
        """SIGKILL every process of host `index`: the host dies (its disk stays)."""
        _kill_all_in(self.hosts[index].netns or "")

    def destroy(self) -> None:
        for i in range(self.count):
            ns = f"cvmh{self.tag}-m{i}"
            _kill_all_in(ns)
            ip("netns", "del", ns, check=False)
            ip("link", "del", self._host_link(i), check=False)
        ip("link", "del", self.bridge, check=False)
