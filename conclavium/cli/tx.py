"""`conclavium tx ...`: write, follow and read transactions."""

from __future__ import annotations

import argparse
import json
from typing import Any

from conclavium import values
from conclavium.sdk.client import Client

from .context import CliError, client


def _value(text: str) -> Any:
    """VALUE as JSON, in the ledger's value domain (refused here, before anything is signed)."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise CliError(f"VALUE must be JSON (for a string, quote it: '\"{text[:64]}\"')") from None
    except ValueError:  # an integer with more digits than Python converts: far out of range
        raise CliError(f"VALUE: {values.INT_OUT_OF_RANGE_MESSAGE} ({values.INT_OUT_OF_RANGE})") from None
    try:
        values.check(value, "VALUE")
    except values.ValueDomainError as e:
        raise CliError(f"{e.message} ({e.code})") from None
    return value


async def cmd_put(args: argparse.Namespace) -> int:
    value = _value(args.value)
    async with client(args, signs=True) as c:
        h = await c.put(args.map, args.key, value)
        return await _maybe_wait(c, h, args)


async def cmd_delete(args: argparse.Namespace) -> int:
    async with client(args, signs=True) as c:
        h = await c.delete(args.map, args.key)
        return await _maybe_wait(c, h, args)


async def _maybe_wait(c: Client, h: str, args: argparse.Namespace) -> int:
    if args.wait:
        st = await c.wait(h, timeout=args.timeout)
        print(json.dumps(st))
        print(h)
        return 0 if st["status"] == "Committed" else 1
    print(h)
    return 0


async def cmd_status(args: argparse.Namespace) -> int:
    async with client(args) as c:
        st = await (c.wait(args.hash, timeout=args.timeout) if args.wait else c.status(args.hash))
        print(json.dumps(st))
        return 0


async def cmd_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        print(json.dumps(await c.get(args.map, args.key)))
        return 0


def register(sub: Any) -> None:
    tx = sub.add_parser("tx", help="submit and follow transactions").add_subparsers(dest="tx_command", required=True)
    for name, fn, needs_value in (("put", cmd_put, True), ("delete", cmd_delete, False)):
        p = tx.add_parser(name, help=f"{name} one key (prints the transaction hash last)")
        p.add_argument("map")
        p.add_argument("key")
        if needs_value:
            p.add_argument("value", help="JSON value")
        p.add_argument("--wait", action="store_true", help="wait until committed or invalid")
        p.add_argument("--timeout", type=float, default=30.0)
        p.set_defaults(afunc=fn)
    p = tx.add_parser("status", help="status of a transaction, as JSON")
    p.add_argument("hash")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_status)
    p = tx.add_parser("get", help="read a key (private maps: a signed query as --as/--key)")
    p.add_argument("map")
    p.add_argument("key")
    p.set_defaults(afunc=cmd_get)
