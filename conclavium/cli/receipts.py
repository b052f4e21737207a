"""`conclavium receipt get|verify`: fetch a receipt, verify one offline."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conclavium import receipt

from .context import CliError, add_consortium_option, client, trusted_consortium


async def cmd_get(args: argparse.Namespace) -> int:
    async with client(args) as c:
        tx = args.hash
        if tx.startswith("0x") and len(tx) == 66:  # an Ethereum transaction hash: its entry's receipt
            tx = await c.eth_transaction_id(tx, timeout=args.timeout)
        print(json.dumps(await c.receipt(tx, timeout=args.timeout), indent=2))
        return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        r = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CliError(f"cannot read receipt {args.file}: {e}") from None
    ident = trusted_consortium(args, required=True)
    assert ident is not None
    try:
        v = receipt.verify(r, ident, tx_hash=args.tx, at_ms=None if args.at is None else args.at * 1000)
    except receipt.ReceiptError as e:
        print(json.dumps({"valid": False, "code": e.code, "reason": str(e), "not_counted": e.not_counted}))
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
                "members": v.members,
                "consortium_version": ident.version,
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    r = sub.add_parser("receipt", help="receipts").add_subparsers(dest="receipt_command", required=True)
    p = r.add_parser(
        "get", help="fetch the receipt of a committed transaction (JSON); also by Ethereum transaction hash (0x...)"
    )
    p.add_argument("hash")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_get)
    p = r.add_parser(
        "verify",
        help="verify a receipt offline against the consortium identity (the global --consortium FILE, "
        "or --net's); exit 0 when valid",
    )
    p.add_argument("file")
    add_consortium_option(p)
    p.add_argument("--tx", help="also check the receipt is for this transaction hash")
    p.add_argument(
        "--at",
        type=int,
        help="for a receipt whose ledger time is not signed (version 2, a ledger before rules version 4; "
        "required there): count only signers whose endorsement is valid at this time (seconds since the epoch). "
        "Refused for a version 3 receipt: its signed time is the only one its signers are checked at",
    )
    p.set_defaults(func=cmd_verify)
