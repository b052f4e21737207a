"""The `conclavium` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

import aiohttp

from conclavium.crypto.keys import ALGORITHMS
from conclavium.keyfiles import write_encryption_key, write_identity
from conclavium.sdk.client import ClientError, NoSigningKey
from conclavium.tx import TxError
from conclavium.values import ValueDomainError

from . import attestation, consortium, gov, k8s, ledger, local, notary, receipts, tx
from .context import NEEDS_KEY, CliError


def cmd_keygen(args: argparse.Namespace) -> int:
    key = write_identity(Path(args.out), Path(args.out).name, args.alg)
    out = {"key": f"{args.out}.key", "public_key": f"{args.out}.pub.pem", "key_id": key.key_id}
    if args.encryption:
        out["encryption_key"] = f"{args.out}.enc.key"
        out["encryption_public_key"] = write_encryption_key(Path(args.out))
    print(json.dumps(out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conclavium", description="Conclavium: a confidential consortium ledger")
    p.add_argument("--net", type=Path, help="a local network's directory (reads DIR/local.json)")
    p.add_argument("--gateway", help="gateway URL of any deployment")
    p.add_argument(
        "--service-cert",
        dest="pin_cert",
        type=Path,
        help="the service certificate (PEM) to pin: documents are signed only for the ledger it names "
        "(with --net: the network's own by default)",
    )
    p.add_argument(
        "--consortium",
        dest="pin_consortium",
        type=Path,
        help="the consortium identity (JSON) to trust: commits are reported only with a receipt signed by "
        "nodes of k distinct members of it, and private operations are sealed only to a transaction key nodes "
        "of k distinct members vouch for (with --net: the network's own by default)",
    )
    p.add_argument(
        "--ledger",
        help="the ledger id documents are signed for (default: the one the pinned certificate names, or the "
        "gateway's); needed by --sign-only without --service-cert",
    )
    p.add_argument("--as", dest="as_name", help="act as this member or user of the local network")
    p.add_argument("--key", dest="key_file", help="sign with this private key file")
    sub = p.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="create a key pair: PREFIX.key (0600) and PREFIX.pub.pem")
    kg.add_argument("--out", required=True)
    kg.add_argument("--alg", choices=ALGORITHMS, default="Ed25519")
    kg.add_argument(
        "--encryption",
        action="store_true",
        help="also a member's X25519 encryption key for recovery shares: PREFIX.enc.key (0600) and PREFIX.enc.pub",
    )
    kg.set_defaults(func=cmd_keygen)
    local.register(sub)
    consortium.register(sub)
    tx.register(sub)
    receipts.register(sub)
    gov.register(sub)
    ledger.register(sub)
    attestation.register(sub)
    notary.register(sub)
    k8s.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one command. Every error a user can cause ends in one line on stderr and a non-zero
    exit: 2 for usage and input (bad arguments, files, values), 1 for what the service or the
    network answered. Set CONCLAVIUM_TRACEBACK=1 to see the traceback of an unexpected error."""
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "afunc", None):
            code = asyncio.run(args.afunc(args))
        else:
            code = args.func(args)
    except KeyboardInterrupt:
        code = 130
    except Exception as e:
        if os.environ.get("CONCLAVIUM_TRACEBACK") == "1":
            raise
        message, code = _one_line(e)
        print(message, file=sys.stderr)
    sys.exit(code)


def _one_line(e: Exception) -> tuple[str, int]:
    """The error as one line and an exit code."""
    if isinstance(e, CliError):
        return f"conclavium: {e}", 2
    if isinstance(e, ClientError):
        reason = {"reason": e.reason} if e.reason else {}
        return json.dumps({"error": {"status": e.status, "code": e.code, **reason, "message": e.message}}), 1
    if isinstance(e, NoSigningKey):
        return f"conclavium: {NEEDS_KEY}", 2
    if isinstance(e, TxError | ValueDomainError):
        return f"conclavium: {e.message} ({e.code})", 2
    if isinstance(e, aiohttp.InvalidURL):
        return f"conclavium: not a gateway URL: {e}", 2
    if isinstance(e, aiohttp.ContentTypeError | aiohttp.ClientResponseError):
        return f"conclavium: the gateway's answer is not what a Conclavium gateway sends: {e}", 1
    if isinstance(e, FileNotFoundError | FileExistsError | PermissionError | IsADirectoryError | NotADirectoryError):
        return f"conclavium: {e.strerror or e}: {e.filename}", 2
    if isinstance(e, aiohttp.ClientConnectionError | TimeoutError | OSError):
        return f"conclavium: {type(e).__name__}: {e}", 1
    return f"conclavium: unexpected error: {type(e).__name__}: {e} (CONCLAVIUM_TRACEBACK=1 shows where)", 1


if __name__ == "__main__":
    main()
