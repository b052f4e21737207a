"""Ports for local processes come from below the kernel's ephemeral range: a port picked by
`bind(0)` could become the source port of an outgoing connection before the server bound it, and
the server then failed to start (seen once in CI as an executor exiting during start-up)."""

from __future__ import annotations

import socket

from conclavium.local.processes import _ephemeral_low, free_port


def test_ports_are_free_distinct_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(p < _ephemeral_low() for p in ports)
    for p in ports[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))

