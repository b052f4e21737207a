"""`conclavium consortium init|next|sign|verify|endorse-node`: the consortium identity, offline.

Members build and sign identity documents on their own machines (only a signature leaves them):
`init` writes an unsigned version 1 for a genesis configuration, `next` the unsigned successor of
a version, `sign` adds one member's signature, `verify` checks a document (version 1 against its
founders, a later one against the version before it). `endorse-node` signs and submits a member's
endorsement of one of its nodes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from conclavium import consortium
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.sdk.client import Client

from .context import CliError, client, identity


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read {what} {path}: {e}") from None


def _write(doc: dict[str, Any], out: str | None) -> None:
    text = json.dumps(doc, indent=2)
    if out:
        Path(out).write_text(text + "\n")
    else:
        print(text)


def _member(spec: str) -> dict[str, Any]:
    name, sep, path = spec.partition("=")
    if not sep:
        raise CliError(f"--member takes NAME=PUBLIC_KEY_FILE, got {spec!r}")
    try:
        key = PublicKey.load(Path(path).read_text())
    except (OSError, KeyError_) as e:
        raise CliError(f"member {name}: cannot read a public key from {path}: {e}") from None
    return {"name": name, "public_key": key.pem, "weight": 1}


def cmd_init(args: argparse.Namespace) -> int:
    genesis = consortium.genesis_digest(_read_json(args.genesis, "genesis configuration")) if args.genesis else None
    try:
        doc = consortium.make_identity(args.ledger, [_member(m) for m in args.member], args.threshold, genesis=genesis)
    except consortium.IdentityError as e:
        raise CliError(str(e)) from None
    _write(doc, args.out)
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    current = _read_json(args.file, "identity")
    try:
        body = consortium.load(current).body
        members = [m for m in body["members"] if m["name"] not in set(args.remove)]
        members += [_member(m) for m in args.add]
        retired = list(body["retired_nodes"])
        for spec in args.retire:
            node, _, after = spec.partition("@")
            retired.append({"node": node, "after_height": int(after)})
        changes: dict[str, Any] = {"members": members, "retired_nodes": retired}
        if args.threshold is not None:
            changes["threshold"] = args.threshold
        doc = consortium.next_identity(current, **changes)
    except (consortium.IdentityError, ValueError) as e:
        raise CliError(str(e)) from None
    _write(doc, args.out)
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    key = identity(args, "members")
    if key is None:
        raise CliError("consortium sign needs the member's key: --key FILE (or --net DIR --as NAME)")
    try:
        doc = consortium.sign(_read_json(args.file, "identity"), key)
    except consortium.IdentityError as e:
        raise CliError(str(e)) from None
    _write(doc, args.out or args.file)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    doc = _read_json(args.file, "identity")
    try:
        if args.previous:
            ident = consortium.verify_next(consortium.load(_read_json(args.previous, "identity")), doc)
        else:
            ident = consortium.verify_genesis(doc)
    except consortium.IdentityError as e:
        print(json.dumps({"valid": False, "code": e.code, "reason": e.message}))
        return 1
    members = {k: ident.names[k] for k in ident.members}
    print(json.dumps({"valid": True, "ledger": ident.ledger, "version": ident.version, "digest": ident.digest,
                      "threshold": ident.threshold, "members": members}))
    return 0


async def _endorse(args: argparse.Namespace) -> int:
    try:
        pem = PublicKey.load(Path(args.signing_key).read_text()).pem
    except (OSError, KeyError_) as e:
        raise CliError(f"cannot read the node's signing key {args.signing_key}: {e}") from None
    async with client(args, "members", signs=True) as c:
        now = int(time.time())
        not_before = args.not_before if args.not_before is not None else await _ledger_now(c, now)
        submitted = await c.endorse_node(pem, not_before, now + args.days * 86400)
        st = await c.await_endorsement(submitted["tx_hash"], submitted["node_id"], timeout=args.timeout)
        print(json.dumps({"node_id": submitted["node_id"], "status": st["status"], "reason": st.get("reason")}))
        return 0 if st["status"] == "Executed" else 1


async def _ledger_now(c: Client, now: int) -> int:
    """The endorsement's default start: a minute before the ledger's time or this clock's, whichever
    is earlier. The executors check validity against the ledger's time, which stands still while no
    node can sign (after a recovery, before the first endorsement), so an endorsement starting at
    this clock's now would never become valid there. The gateway's word for that time can only move
    the start earlier, for a key this member is endorsing anyway."""
    ledger_ms = (await c.service_unverified()).get("time_ms")
    ledger_s = ledger_ms // 1000 if type(ledger_ms) is int and ledger_ms > 0 else now
    return min(now, ledger_s) - 60


def register(sub: Any) -> None:
    c = sub.add_parser("consortium", help="the consortium identity: build, sign, verify offline")
    cs = c.add_subparsers(dest="consortium_command", required=True)
    p = cs.add_parser("init", help="an unsigned version 1 (the genesis identity)")
    p.add_argument("--ledger", required=True)
    p.add_argument("--member", action="append", required=True, help="NAME=PUBLIC_KEY_FILE (a PEM key or certificate)")
    p.add_argument("--threshold", type=int, help="k, at least a majority of the members (default: a majority)")
    p.add_argument("--genesis", help="the genesis configuration (JSON) the founders sign with it")
    p.add_argument("--out")
    p.set_defaults(func=cmd_init)
    p = cs.add_parser("next", help="the unsigned next version of an identity")
    p.add_argument("file")
    p.add_argument("--add", action="append", default=[], help="NAME=PUBLIC_KEY_FILE")
    p.add_argument("--remove", action="append", default=[], help="a member's name")
    p.add_argument("--retire", action="append", default=[], help="NODE_ID@HEIGHT: its signatures count up to HEIGHT")
    p.add_argument("--threshold", type=int)
    p.add_argument("--out")
    p.set_defaults(func=cmd_next)
    p = cs.add_parser("sign", help="add this member's signature to an identity document (in place by default)")
    p.add_argument("file")
    p.add_argument("--key", dest="key_file", default=argparse.SUPPRESS, help="the member's private key file")
    p.add_argument("--out")
    p.set_defaults(func=cmd_sign)
    p = cs.add_parser("verify", help="check an identity: version 1 against its founders, else against --previous")
    p.add_argument("file")
    p.add_argument("--previous", help="the version before it, trusted")
    p.set_defaults(func=cmd_verify)
    p = cs.add_parser("endorse-node", help="endorse one of this member's nodes (its signing key) and submit it")
    p.add_argument("signing_key", help="the node's signing public key (PEM), as its attestation binds it")
    p.add_argument("--days", type=int, default=consortium.DEFAULT_ENDORSEMENT_DAYS)
    p.add_argument(
        "--not-before", type=int, help="validity start, seconds since the epoch (default: a minute before ledger time)"
    )
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(afunc=_endorse)
