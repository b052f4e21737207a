"""`conclavium gov ...`: propose, vote, withdraw and inspect governance proposals.

Each command signs with the member chosen by `--as`/`--key` (default: the first member of the local
network), waits until the ledger recorded the document and exits non-zero with the reason when the
executors refused it. With `--sign-only FILE` propose, vote and withdraw only sign, offline: the
document goes to FILE for the member to hand over (to the operator, or to `gov submit` anywhere).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from conclavium import cose
from conclavium.governance import documents
from conclavium.governance.documents import parse_proposal_json
from conclavium.governance.model import GovernanceError
from conclavium.identity import CertificateError, service_ledger
from conclavium.sdk.client import Client

from . import recovery_share
from .context import NEEDS_KEY, CliError, client, identity, pinned_cert


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
    proposal can name a key file instead of pasting a PEM into JSON; a PATH ending in .json is
    replaced by the JSON value it holds (a signed consortium identity, a constitution)."""
    if isinstance(value, str) and value.startswith("@"):
        text = (base / value[1:]).read_text()
        return json.loads(text) if value.endswith(".json") else text
    if isinstance(value, dict):
        return {k: _with_files(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_files(v, base) for v in value]
    return value


def _offline_ledger(args: argparse.Namespace) -> str:
    """The ledger a document signed offline is for: --ledger, or the one the pinned certificate names."""
    if args.ledger:
        return str(args.ledger)
    cert = pinned_cert(args)
    if cert is None:
        raise CliError("--sign-only contacts no gateway: say which ledger the document is for (--ledger ID)")
    try:
        return service_ledger(cert)
    except CertificateError as e:
        raise CliError(f"--service-cert: {e}") from None


def _sign_offline(args: argparse.Namespace, make: Any) -> int:
    """Sign a governance document with the member's key and write it to --sign-only FILE; print its id.
    Nothing is sent: the member hands the file over (the operator forwards it, or `gov submit`)."""
    key = identity(args, "members")
    if key is None:
        raise CliError(NEEDS_KEY)
    try:
        doc = make(key, int(time.time()), _offline_ledger(args))
    except GovernanceError as e:
        raise CliError(str(e)) from None
    Path(args.sign_only).write_bytes(doc)
    print(documents.document_id(doc))
    return 0


async def cmd_propose(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        doc = _with_files(json.loads(path.read_text()), path.parent)
        actions = parse_proposal_json(json.dumps(doc))
    except (OSError, GovernanceError, ValueError) as e:
        raise CliError(f"proposal file {args.file}: {e}") from None
    if args.sign_only:
        return _sign_offline(args, lambda key, ts, ledger: documents.make_proposal(actions, key, ts, ledger=ledger))
    async with client(args, "members", signs=True) as c:
        submitted = await c.propose(actions)
        code = await _recorded(c, submitted, args.timeout)
        print(submitted["proposal_id"])
        return code


async def cmd_vote(args: argparse.Namespace) -> int:
    if args.sign_only:
        pid, approve = args.id.lower(), args.approve
        return _sign_offline(args, lambda key, ts, ledger: documents.make_ballot(pid, approve, key, ts, ledger=ledger))
    async with client(args, "members", signs=True) as c:
        return await _recorded(c, await c.vote(args.id, approve=args.approve), args.timeout)


async def cmd_withdraw(args: argparse.Namespace) -> int:
    if args.sign_only:
        pid = args.id.lower()
        return _sign_offline(args, lambda key, ts, ledger: documents.make_withdrawal(pid, key, ts, ledger=ledger))
    async with client(args, "members", signs=True) as c:
        return await _recorded(c, await c.withdraw(args.id), args.timeout)


async def cmd_submit(args: argparse.Namespace) -> int:
    """Submit a document signed elsewhere, byte for byte, and wait until the ledger recorded it."""
    try:
        doc = Path(args.file).read_bytes()
        route = documents.submission_path(cose.parse1(doc))
    except OSError as e:
        raise CliError(f"cannot read {args.file}: {e.strerror or e}") from None
    except (cose.CoseError, documents.DocumentRouteError) as e:
        raise CliError(f"{args.file} is not a governance document: {e}") from None
    async with client(args, "members") as c:
        return await _recorded(c, await c.submit_document(doc, route), args.timeout)


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


SIGN_ONLY = (
    "sign offline: write the signed COSE document to OUT and print its id, contacting no gateway "
    "(the ledger: --ledger, or the pinned certificate's)"
)


def register(sub: Any) -> None:
    gov = sub.add_parser("gov", help="governance").add_subparsers(dest="gov_command", required=True)
    p = gov.add_parser(
        "propose", help='propose FILE.json {"actions": [...]} ("@PATH" values read files); prints the id last'
    )
    p.add_argument("file")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sign-only", metavar="OUT", help=SIGN_ONLY)
    p.set_defaults(afunc=cmd_propose)
    p = gov.add_parser("vote", help="vote on a proposal")
    p.add_argument("id")
    choice = p.add_mutually_exclusive_group(required=True)
    choice.add_argument("--approve", dest="approve", action="store_true")
    choice.add_argument("--reject", dest="approve", action="store_false")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sign-only", metavar="OUT", help=SIGN_ONLY)
    p.set_defaults(afunc=cmd_vote)
    p = gov.add_parser("withdraw", help="withdraw your own open proposal")
    p.add_argument("id")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--sign-only", metavar="OUT", help=SIGN_ONLY)
    p.set_defaults(afunc=cmd_withdraw)
    p = gov.add_parser("submit", help="submit a governance document signed elsewhere (a --sign-only file), as it is")
    p.add_argument("file")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=cmd_submit)
    p = gov.add_parser("list", help="proposals, optionally in one state")
    p.add_argument("--state", choices=["Open", "Accepted", "Rejected", "Withdrawn", "Expired", "Failed"])
    p.set_defaults(afunc=cmd_list)
    p = gov.add_parser("show", help="one proposal with its state and ballots (JSON)")
    p.add_argument("id")
    p.set_defaults(afunc=cmd_show)
    p = gov.add_parser("constitution", help="the constitution in force (JSON)")
    p.set_defaults(afunc=cmd_constitution)
    recovery_share.register(gov)
