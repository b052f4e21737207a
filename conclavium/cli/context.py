"""Who the CLI talks to and as whom: `--net DIR` (a local network's local.json), `--gateway URL`,
`--as NAME` and `--key FILE`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conclavium.crypto.keys import PrivateKey
from conclavium.sdk.client import Client


class CliError(Exception):
    """A usage or environment problem the CLI reports in one line with exit code 2."""


def load_net(net: Path) -> dict[str, Any]:
    path = net / "local.json"
    if not path.exists():
        raise CliError(f"{path} not found: is `conclavium local up --dir {net}` running?")
    return dict(json.loads(path.read_text()))


def identity(args: argparse.Namespace, default_role: str = "users") -> PrivateKey | None:
    if getattr(args, "key_file", None):
        return PrivateKey.from_file(args.key_file)
    if not args.net:
        return None
    net = load_net(args.net)
    people = net["users"] + net["members"] if default_role == "users" else net["members"] + net["users"]
    if args.as_name:
        match = [p for p in people if p["name"] == args.as_name]
        if not match:
            raise CliError(f"no member or user named {args.as_name!r} in {args.net}/local.json")
        chosen = match[0]
    elif people:
        chosen = people[0]
    else:
        return None
    return PrivateKey.from_file(str(args.net / chosen["key"]))


def gateway_url(args: argparse.Namespace) -> str:
    if args.gateway:
        return str(args.gateway)
    if args.net:
        return str(load_net(args.net)["gateway_url"])
    raise CliError("say where the ledger is: --net DIR or --gateway URL")


def client(args: argparse.Namespace, default_role: str = "users") -> Client:
    """A client for the chosen identity; with --net it pins the network's service certificate."""
    cert = None
    if args.net and not args.gateway:
        cert_path = args.net / load_net(args.net)["service_cert"]
        cert = cert_path.read_text() if cert_path.exists() else None
    return Client(gateway_url(args), identity(args, default_role), service_cert=cert)
