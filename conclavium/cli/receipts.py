"""`conclavium receipt get|verify`: fetch a receipt, verify one offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conclavium import receipt

from .context import CliError, client


async def cmd_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        print(json.dumps(await c.receipt(args.hash, timeout=args.timeout), indent=2))
        return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        r = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CliError(f"cannot read receipt {args.file}: {e}") from None
    try:
        cert = Path(args.service_cert).read_text()
    except OSError as e:
        raise CliError(f"cannot read service certificate: {e}") from None
    try:
        v = receipt.verify(r, cert, min_signers=args.min_signers, tx_hash=args.tx)
    except receipt.ReceiptError as e:
        print(json.dumps({"valid": False, "code": e.code, "reason": str(e)}))
        return 1
    print(
        json.dumps(
            {
                "valid": True,
                "ledger": v.ledger,
                "height": v.height,
                "index": v.index,
                "tx_hash": v.tx_hash,
                "signers": v.signers,
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    p = r.add_parser("get", help="fetch the receipt of a committed transaction (JSON)")
    p.add_argument("hash")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_get)
    p = r.add_parser("verify", help="verify a receipt offline; exit 0 when valid")
    p.add_argument("file")
    p.add_argument("--service-cert", required=True)
    p.add_argument("--min-signers", type=int, default=1, help="require at least this many node signatures")
    p.add_argument("--tx", help="also check the receipt is for this transaction hash")
    p.set_defaults(func=cmd_verify)
