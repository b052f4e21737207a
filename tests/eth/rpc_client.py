"""A bare JSON-RPC client for the tests that compare raw answers (no library in between)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.request import Request, urlopen


class RpcFailed(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error


def call(url: str, method: str, *params: Any) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    req = Request(url, body, {"Content-Type": "application/json"})
    with urlopen(req, timeout=30) as r:
        reply = json.loads(r.read())
    if "error" in reply:
        raise RpcFailed(reply["error"])
    return reply["result"]


def post(url: str, payload: Any, content_type: str = "application/json") -> tuple[int, Any]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = Request(url, data, {"Content-Type": content_type})
    try:
        with urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except Exception as e:  # urllib raises HTTPError for 4xx/5xx
        status = getattr(e, "code", None)
        if status is None:
            raise
        return int(status), json.loads(e.read())  # type: ignore[attr-defined]


def receipt(url: str, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = call(url, "eth_getTransactionReceipt", tx_hash)
        if r is not None:
            return dict(r)
        time.sleep(0.05)
    raise TimeoutError(f"no receipt for {tx_hash}")
