"""`conclavium gov recovery-share`: a member hands its recovery share to a recovering executor.

Runs on the member's machine, where its signing and encryption keys live. It reads the recovery
status from the gateway (untrusted), checks the recovering node's attestation evidence against the
member's own policy (the evidence must bind the node's keys), opens the member's share with its
encryption key (checked against the share set's digest), seals the share to the node's attested
encryption key, signs a `recovery_share` document and submits it; then it waits until the node
took the share, or says why it refused it. The share is never sent in clear.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from conclavium import recovery
from conclavium.attestation import AttestationError, load_policy, verify_and_evaluate
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.encoding import b64d
from conclavium.identity import CertificateError, service_ledger
from conclavium.node_messages import bound_keys
from conclavium.sdk.client import ClientError

from .context import CliError, client, load_key, load_net


def _encryption_key_file(args: argparse.Namespace, member_id: str) -> Path:
    if args.encryption_key:
        return Path(args.encryption_key)
    if args.net:
        for p in load_net(args.net)["members"]:
            if p.get("encryption_key") and load_key(str(Path(args.net) / p["key"])).key_id == member_id:
                return Path(args.net) / p["encryption_key"]
    raise CliError("give --encryption-key FILE (the member's PREFIX.enc.key from `conclavium keygen --encryption`)")


def _policy(args: argparse.Namespace) -> dict[str, Any]:
    """The attestation policy the member accepts the recovering node under: --policy FILE, or a
    local network's own genesis node policy and measurements."""
    if args.policy:
        try:
            return dict(json.loads(Path(args.policy).read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise CliError(f"--policy {args.policy}: {e}") from None
    if args.net:
        genesis = json.loads((Path(args.net) / "genesis.json").read_text())
        allowed = [
            {"platform": m["platform"], "measurement": m["measurement"]} for m in genesis.get("measurements", [])
        ]
        return {**genesis.get("node_policy", {}), "measurements": allowed}
    raise CliError("give --policy FILE: the attestation policy the recovering executor must meet")


def check_node(node: dict[str, Any], policy: dict[str, Any]) -> bytes:
    """The recovering node's encryption key, once its evidence binds its keys and meets `policy`."""
    try:
        signing = PublicKey.load(node["signing_key"])
        encryption = bytes.fromhex(node["encryption_key"])
        evidence = node["evidence"]
        if signing.key_id != node["id"]:
            raise CliError("the recovering node's id is not its signing key's")
        verify_and_evaluate(
            evidence["platform"],
            b64d(evidence["evidence"]),
            load_policy(policy),
            public_keys=bound_keys(signing.spki, encryption),
            certs=[b64d(v) for v in (evidence.get("certs") or {}).values()],
            collateral={k: b64d(v) for k, v in (evidence.get("collateral") or {}).items()} or None,
            at=dt.datetime.now(dt.UTC),
        )
    except AttestationError as e:
        raise CliError(f"the recovering node's attestation is refused: {e.check}: {e.message}") from None
    except (KeyError, TypeError, ValueError, KeyError_) as e:
        raise CliError(f"the recovering node's keys or evidence are malformed: {e}") from None
    return encryption


async def _status(c: Any, deadline: float) -> dict[str, Any]:
    """`GET /v1/recovery`, asked again while the answer is transient (503: a recovering executor
    busy replaying, NATS restarting) until the deadline."""
    while True:
        try:
            return dict(await c.recovery())
        except ClientError as e:
            if e.status != 503 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(1.0)


async def cmd_recovery_share(args: argparse.Namespace) -> int:
    policy = _policy(args)
    async with client(args, "members", signs=True) as c:
        assert c.key is not None
        member = c.key.key_id
        deadline = time.monotonic() + args.timeout
        status = await _status(c, deadline)
        if status.get("state") != "waiting_for_shares":
            print(json.dumps({"state": status.get("state"), "reason": status.get("reason")}))
            return 1
        if c.service_cert is None:
            raise CliError("give --service-cert FILE (or --net DIR): the share is signed for the ledger it names")
        try:
            ledger = service_ledger(c.service_cert)
        except CertificateError as e:
            raise CliError(f"--service-cert: {e}") from None
        share_set, node = status["share_set"], status["node"]
        mine = share_set["members"].get(member)
        if mine is None:
            raise CliError(f"member {member} holds no share of set {share_set['id'][:16]}")
        try:
            key = recovery.load_encryption_key(_encryption_key_file(args, member).read_bytes())
            share = recovery.open_member_share(mine["box"], key, ledger, share_set["id"], member, mine["digest"])
        except recovery.RecoveryError as e:
            raise CliError(f"{e.message} ({e.code})") from None
        if args.node and node["id"] != args.node:
            raise CliError(f"the recovering node is {node['id']}, not --node {args.node}")
        node_key = check_node(node, policy)
        box = recovery.seal_to_node(share, node_key, ledger, share_set["id"], member, node["id"])
        doc = recovery.share_document(c.key, ledger, share_set["id"], node["id"], box, int(time.time()))
        submitted = await c.submit_recovery_share(doc)
        while True:
            status = await _status(c, deadline)
            refused = status.get("refused", {}).get(member)
            taken = member in status.get("received", []) or status.get("state") == "running"
            if taken or refused:
                print(
                    json.dumps({"tx_hash": submitted["tx_hash"], "accepted": bool(taken), "reason": status["reason"]})
                )
                return 0 if taken else 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"the recovering node did not take the share within {args.timeout}s")
            await asyncio.sleep(0.2)


def register(gov: Any) -> None:
    p = gov.add_parser(
        "recovery-share",
        help="hand this member's recovery share to the executor recovering the ledger (sealed to it)",
    )
    p.add_argument("--encryption-key", help="the member's encryption key file (PREFIX.enc.key); --net finds it")
    p.add_argument("--policy", help="attestation policy (JSON) the recovering executor must meet; --net: genesis'")
    p.add_argument("--node", help="hand the share only to this recovering node id (from its operator)")
    p.add_argument("--timeout", type=float, default=60.0)
    p.set_defaults(afunc=cmd_recovery_share)
