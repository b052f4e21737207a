"""The `conclavium` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from conclavium.crypto.keys import ALGORITHMS
from conclavium.keyfiles import write_identity
from conclavium.sdk.client import ClientError

from . import attestation, gov, ledger, local, receipts, tx
from .context import CliError


def cmd_keygen(args: argparse.Namespace) -> int:
    key = write_identity(Path(args.out), Path(args.out).name, args.alg)
    print(json.dumps({"key": f"{args.out}.key", "public_key": f"{args.out}.pub.pem", "key_id": key.key_id}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="conclavium", description="Conclavium: a confidential consortium ledger")
    p.add_argument("--net", type=Path, help="a local network's directory (reads DIR/local.json)")
    p.add_argument("--gateway", help="gateway URL of any deployment")
    p.add_argument("--as", dest="as_name", help="act as this member or user of the local network")
    p.add_argument("--key", dest="key_file", help="sign with this private key file")
    sub = p.add_subparsers(dest="command", required=True)
    kg = sub.add_parser("keygen", help="create a key pair: PREFIX.key (0600) and PREFIX.pub.pem")
    kg.add_argument("--out", required=True)
    kg.add_argument("--alg", choices=ALGORITHMS, default="Ed25519")
    kg.set_defaults(func=cmd_keygen)
    local.register(sub)
    tx.register(sub)
    receipts.register(sub)
    gov.register(sub)
    ledger.register(sub)
    attestation.register(sub)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "afunc", None):
            code = asyncio.run(args.afunc(args))
        else:
            code = args.func(args)
    except CliError as e:
        print(f"conclavium: {e}", file=sys.stderr)
        code = 2
    except ClientError as e:
        print(json.dumps({"error": {"status": e.status, "code": e.code, "message": e.message}}), file=sys.stderr)
        code = 1
    except (TimeoutError, OSError) as e:
        print(f"conclavium: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
