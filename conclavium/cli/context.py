"""Who the CLI talks to and as whom: `--net DIR` (a local network's local.json), `--gateway URL`,
`--as NAME` and `--key FILE`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conclavium.consortium import Identity, IdentityError, load_trusted
from conclavium.crypto.keys import KeyError_, PrivateKey
from conclavium.sdk.client import Client


class CliError(Exception):
    """A usage or environment problem the CLI reports in one line with exit code 2."""


NEEDS_KEY = "this command signs what it sends: give --key FILE (or --net DIR, optionally with --as NAME)"


def load_net(net: Path) -> dict[str, Any]:
    path = net / "local.json"
    if not path.exists():
        raise CliError(f"{path} not found: is `conclavium local up --dir {net}` running?")
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise CliError(f"cannot read {path}: {e}") from None


def load_key(path: str) -> PrivateKey:
    try:
        return PrivateKey.from_file(path)
    except OSError as e:
        raise CliError(f"cannot read key file {path}: {e.strerror or e}") from None
    except KeyError_ as e:
        raise CliError(f"{path} is not a private key file: {e}") from None


def identity(args: argparse.Namespace, default_role: str = "users") -> PrivateKey | None:
    if getattr(args, "key_file", None):
        return load_key(args.key_file)
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
    return load_key(str(args.net / chosen["key"]))


def gateway_url(args: argparse.Namespace) -> str:
    if args.gateway:
        return str(args.gateway)
    if args.net:
        return str(load_net(args.net)["gateway_url"])
    raise CliError("say where the ledger is: --net DIR or --gateway URL")


def client(args: argparse.Namespace, default_role: str = "users", *, signs: bool = False) -> Client:
    """A client for the chosen identity, pinning --service-cert, or with --net (and no --gateway)
    the network's service certificate. `signs`: the command signs what it sends, so an identity is
    required up front."""
    cert = pinned_cert(args) if getattr(args, "pin_cert", None) or not args.gateway else None
    key = identity(args, default_role)
    if signs and key is None:
        raise CliError(NEEDS_KEY)
    return Client(
        gateway_url(args),
        key,
        ledger=getattr(args, "ledger", None),
        service_cert=cert,
        consortium=trusted_consortium(args),
    )


def pinned_cert(args: argparse.Namespace) -> str | None:
    """The certificate `--service-cert` (or `--net`'s) pins, read; None when none is given."""
    if getattr(args, "pin_cert", None):
        try:
            cert = Path(args.pin_cert).read_text()
        except OSError as e:
            raise CliError(f"cannot read --service-cert {args.pin_cert}: {e}") from None
        if "BEGIN CERTIFICATE" not in cert:
            raise CliError(f"--service-cert {args.pin_cert} is not a PEM certificate")
        return cert
    if args.net:
        path = args.net / load_net(args.net)["service_cert"]
        return path.read_text() if path.exists() else None
    return None


def add_consortium_option(p: argparse.ArgumentParser) -> None:
    """`--consortium FILE` on an offline verification command (it overrides the global one only
    when given)."""
    p.add_argument(
        "--consortium",
        dest="pin_consortium",
        type=Path,
        default=argparse.SUPPRESS,
        help="the consortium identity to verify against (JSON: one document, or a chain as a list)",
    )


def trusted_consortium(args: argparse.Namespace, required: bool = False) -> Identity | None:
    """The consortium identity given with --consortium, or with --net (and no --gateway) the
    network's own consortium.json."""
    path: Path | None = getattr(args, "pin_consortium", None)
    if path is None and args.net and not args.gateway:
        named = load_net(args.net).get("consortium")
        path = args.net / named if named else None
    if path is None:
        if required:
            raise CliError("give the consortium identity to verify against: --consortium FILE (or --net DIR)")
        return None
    try:
        return load_trusted(Path(path).read_bytes())
    except OSError as e:
        raise CliError(f"cannot read --consortium {path}: {e.strerror or e}") from None
    except IdentityError as e:
        raise CliError(f"--consortium {path}: {e}") from None
