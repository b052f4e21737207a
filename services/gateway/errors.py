"""The gateway's error model: every answer that is not a success is `{"error": {code, message}}`."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        signed_read: dict[str, Any] | None = None,
    ) -> None:
        """`signed_read`: an executor's signature over this error as its answer to a read, relayed as is."""
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}
        self.signed_read = signed_read


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    signed_read: dict[str, Any] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if signed_read is not None:
        body["signed_read"] = signed_read
    return web.json_response(body, status=status, headers=headers, dumps=_dumps)


def _dumps(v: Any) -> str:
    return orjson.dumps(v).decode()


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)
