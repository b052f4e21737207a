"""`conclavium notary ...`: build a Corda-style transaction, have it notarised, follow it, ask who
consumed a state, verify a notarisation offline (docs/notary.md)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from conclavium import receipt
from conclavium.encoding import b64d, loads
from conclavium.notary import request as nr
from conclavium.notary.tearoff import TearOffError, WireTransaction
from conclavium.sdk.notary import NotaryClient, NotaryRefused

from .context import CliError, add_consortium_option, client, trusted_consortium


def _refs(values: list[str] | None) -> list[str]:
    try:
        return [nr.check_state_ref(v.lower()) for v in values or []]
    except nr.RequestError as e:
        raise CliError(f"{e.message} ({e.code})") from None


def _window(args: argparse.Namespace) -> nr.TimeWindow | None:
    if args.from_ms is None and args.until_ms is None:
        return None
    return nr.TimeWindow(args.from_ms, args.until_ms)


def _read_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except OSError as e:
        raise CliError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except ValueError as e:
        raise CliError(f"{what} {path} is not JSON: {e}") from None


async def cmd_tx(args: argparse.Namespace) -> int:
    """A transaction with these inputs, references, time window and outputs, notarised by this
    ledger; writes it (salt included) to --out and prints its id and its outputs' StateRefs."""
    inputs, references = _refs(args.input), _refs(args.reference)
    async with client(args) as c:
        ledger = await c.ledger_id()
    outputs = [o.encode() for o in args.output or []]
    try:
        groups = nr.transaction_groups(inputs, references, _window(args), ledger, outputs=outputs, commands=[b"Move"])
        wtx = WireTransaction(groups, os.urandom(32))
    except nr.RequestError as e:
        raise CliError(f"{e.message} ({e.code})") from None
    Path(args.out).write_text(json.dumps(wtx.to_json(), indent=2))
    tx_id = wtx.id.hex()
    print(json.dumps({"tx_id": tx_id, "outputs": [nr.state_ref(tx_id, i) for i in range(len(outputs))]}))
    print(tx_id)
    return 0


async def cmd_submit(args: argparse.Namespace) -> int:
    async with client(args, signs=True) as c:
        notary = NotaryClient(c)
        try:
            if args.tx:
                req = await notary.build_for(WireTransaction.from_json(_read_json(args.tx, "transaction")))
            else:
                if not args.tx_id:
                    raise CliError("give --tx FILE (a transaction from `notary tx`) or --tx-id HEX with its states")
                tx_id = args.tx_id.lower()
                req = await notary.build(tx_id, _refs(args.input), _refs(args.reference), _window(args))
        except TearOffError as e:
            raise CliError(f"{args.tx}: {e}") from None
        except nr.RequestError as e:
            raise CliError(f"{e.message} ({e.code})") from None
        if args.save:
            Path(f"{args.save}.request.json").write_text(json.dumps(req.to_json()))
        h = await notary.submit(req)
        if not args.wait:
            print(h)
            return 0
        try:
            done = await notary.wait(req, timeout=args.timeout)
        except NotaryRefused as e:
            print(json.dumps({"status": "Refused", "reason": e.reason, "error": e.detail or e.message}))
            print(h)
            return 1
        if args.save:
            Path(f"{args.save}.receipt.json").write_text(json.dumps(done.receipt))
        out: dict[str, Any] = {"status": "Notarised", "tx_id": req.fields.tx_id, "verified": done.proof is not None}
        if done.proof is not None:
            out |= {"height": done.proof.height, "signers": len(done.proof.signers)}
        print(json.dumps(out))
        print(h)
        return 0


async def cmd_status(args: argparse.Namespace) -> int:
    async with client(args) as c:
        print(json.dumps(await NotaryClient(c).status(args.hash.lower())))
        return 0


async def cmd_who_consumed(args: argparse.Namespace) -> int:
    (state,) = _refs([args.state])
    async with client(args, signs=True) as c:
        print(json.dumps(await NotaryClient(c).who_consumed(state)))
        return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline: the receipt verifies against the consortium identity and notarises the request."""
    identity = trusted_consortium(args, required=True)
    assert identity is not None
    obj = _read_json(args.request, "request")
    doc = _read_json(args.receipt, "receipt")
    try:
        req = nr.from_json(obj, _ledger_of(obj))
        proof = nr.verify_notarisation(doc, req, identity)
    except nr.RequestError as e:
        raise CliError(f"{args.request}: {e.message} ({e.code})") from None
    except receipt.ReceiptError as e:
        print(json.dumps({"valid": False, "reason": str(e)}))
        return 1
    print(json.dumps({"valid": True, "tx_id": proof.tx_id, "inputs": proof.inputs, "height": proof.height}))
    return 0


def _ledger_of(obj: Any) -> str:
    """The ledger a saved request names (checked again against the receipt's)."""
    try:
        ledger = loads(b64d(obj["body"]))["ledger"]
    except (KeyError, TypeError, ValueError):
        raise CliError("the request file is not a saved notarisation request") from None
    if not isinstance(ledger, str):
        raise CliError("the request file is not a saved notarisation request")
    return ledger


def register(sub: Any) -> None:
    cmds = sub.add_parser("notary", help="Corda-style notarisation (docs/notary.md)").add_subparsers(
        dest="notary_command", required=True
    )

    def states(p: argparse.ArgumentParser) -> None:
        p.add_argument("--input", action="append", metavar="TXHASH:INDEX", help="a state it consumes (repeat)")
        p.add_argument("--reference", action="append", metavar="TXHASH:INDEX", help="a reference state (repeat)")
        p.add_argument("--from", dest="from_ms", type=int, help="time window start, ms since the epoch (inclusive)")
        p.add_argument("--until", dest="until_ms", type=int, help="time window end, ms since the epoch (exclusive)")

    p = cmds.add_parser("tx", help="build a transaction notarised by this ledger; prints its id last")
    states(p)
    p.add_argument("--output", action="append", metavar="TEXT", help="an output state's content (repeat)")
    p.add_argument("--out", required=True, help="where to write the transaction (JSON, salt included)")
    p.set_defaults(afunc=cmd_tx)
    p = cmds.add_parser("submit", help="request notarisation; prints the request hash last")
    p.add_argument("--tx", help="a transaction file from `notary tx`: its id and tear-off are sent")
    p.add_argument("--tx-id", help="or a transaction id, with --input/--reference/--from/--until (no tear-off)")
    states(p)
    p.add_argument("--wait", action="store_true", help="wait until notarised (exit 0) or refused (exit 1)")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--save", metavar="PREFIX", help="write PREFIX.request.json (and with --wait PREFIX.receipt.json)")
    p.set_defaults(afunc=cmd_submit)
    p = cmds.add_parser("status", help="a request's status, as JSON")
    p.add_argument("hash")
    p.set_defaults(afunc=cmd_status)
    p = cmds.add_parser("who-consumed", help="which transaction consumed a state (a signed query)")
    p.add_argument("state", metavar="TXHASH:INDEX")
    p.set_defaults(afunc=cmd_who_consumed)
    p = cmds.add_parser("verify", help="verify a notarisation offline: exit 0 = valid, else 1 + the reason")
    p.add_argument("--request", required=True)
    p.add_argument("--receipt", required=True)
    add_consortium_option(p)
    p.set_defaults(func=cmd_verify)
