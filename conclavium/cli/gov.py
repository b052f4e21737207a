"""`conclavium gov ...`: propose, vote, withdraw and inspect governance proposals.

Each command signs with the member chosen by `--as`/`--key` (default: the first member of the local
network), waits until the ledger recorded the document and exits non-zero with the reason when the
executors refused it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from conclavium.governance.documents import parse_proposal_json
from conclavium.governance.model import GovernanceError
from conclavium.sdk.client import Client

from .context import CliError, client


async def _recorded(c: Client, submitted: dict[str, Any], timeout: float) -> int:
    st = await c.wait(submitted["tx_hash"], timeout=timeout)
    if st["status"] != "Committed":
        print(json.dumps({"status": st["status"], "reason": st.get("reason")}))
        return 1
    p = await c.proposal(submitted["proposal_id"])
    print(json.dumps({"proposal_id": submitted["proposal_id"], "state": p["state"]}))
    return 0


def _with_files(value: Any, base: Path) -> Any:
    """Replace string values "@PATH" by the contents of PATH (relative to the proposal file), so a
    proposal can name a key file instead of pasting a PEM into JSON."""
    if isinstance(value, str) and value.startswith("@"):
        return (base / value[1:]).read_text()
    if isinstance(value, dict):
        return {k: _with_files(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_files(v, base) for v in value]
    return value


async def cmd_propose(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        doc = _with_files(json.loads(path.read_text()), path.parent)
        actions = parse_proposal_json(json.dumps(doc))
    except (OSError, GovernanceError, ValueError) as e:
        raise CliError(f"proposal file {args.file}: {e}") from None
    async with client(args, "members", signs=True) as c:
        submitted = await c.propose(actions)
        code = await _recorded(c, submitted, args.timeout)
        print(submitted["proposal_id"])
        return code


async def cmd_vote(args: argparse.Namespace) -> int:
    async with client(args, "members", signs=True) as c:
        return await _recorded(c, await c.vote(args.id, approve=args.approve), args.timeout)


async def cmd_withdraw(args: argparse.Namespace) -> int:
    async with client(args, "members", signs=True) as c:
        return await _recorded(c, await c.withdraw(args.id), args.timeout)


async def cmd_list(args: argparse.Namespace) -> int:
    async with client(args, "members") as c:
        rows = await c.proposals(args.state)
        print(json.dumps([{k: p[k] for k in ("proposal_id", "state", "proposer", "actions")} for p in rows], indent=2))
        return 0


async def cmd_show(args: argparse.Namespace) -> int:
    async with client(args, "members") as c:
        print(json.dumps(await c.proposal(args.id), indent=2))
        return 0


async def cmd_constitution(args: argparse.Namespace) -> int:
    async with client(args, "members") as c:
        print(json.dumps(await c.constitution(), indent=2))
        return 0


def register(sub: Any) -> None:
    gov = sub.add_parser("gov", help="governance").add_subparsers(dest="gov_command", required=True)
    p = gov.add_parser(
        "propose", help='propose FILE.json {"actions": [...]} ("@PATH" values read files); prints the id last'
    )
    p.add_argument("file")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_propose)
    p = gov.add_parser("vote", help="vote on a proposal")
    p.add_argument("id")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", dest="approve", action="store_true")
    choice.add_argument("--reject", dest="approve", action="store_false")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_vote)
    p = gov.add_parser("withdraw", help="withdraw your own open proposal")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_withdraw)
    p = gov.add_parser("list", help="proposals, optionally in one state")
    p.add_argument("--state", choices=["Open", "Accepted", "Rejected", "Withdrawn", "Expired", "Failed"])
    p.set_defaults(afunc=cmd_list)
    p = gov.add_parser("show", help="one proposal with its state and ballots (JSON)")
    p.add_argument("id")
    p.set_defaults(afunc=cmd_show)
    p = gov.add_parser("constitution", help="the constitution in force (JSON)")
    p.set_defaults(afunc=cmd_constitution)
