"""`conclavium local up|status` and `conclavium demo`: a whole consortium on this machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.request import urlopen

from conclavium import consortium, receipt, streams
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import dumps, loads
from conclavium.local import sawtooth as saw
from conclavium.local.network import LocalNetwork, NetworkOptions
from conclavium.runtime import connect_nats
from conclavium.sdk.client import Client, ClientError

from .context import CliError, load_net


def _options(args: argparse.Namespace) -> NetworkOptions:
    return NetworkOptions(
        executors=args.executors,
        members=args.members,
        users=args.users,
        sequencers=args.sequencers,
        redis=False if args.no_redis else None,
        nats_servers=args.nats_cluster,
        eth=getattr(args, "eth", False) or getattr(args, "quorum", False),
        quorum=getattr(args, "quorum", False),
        sawtooth=_families(getattr(args, "sawtooth", None)),
    )


def _families(text: str | None) -> list[str]:
    """`--sawtooth intkey,xo`: the families, each one `conclavium local up` has a TP for."""
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in saw.TP_SCRIPTS]
    if unknown or len(set(names)) != len(names):
        raise CliError(f"--sawtooth takes families among {', '.join(sorted(saw.TP_SCRIPTS))}, each once")
    try:
        saw.sdk_python()
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    return names


def cmd_up(args: argparse.Namespace) -> int:
    net = LocalNetwork(Path(args.dir), _options(args))
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        net.start()
        print(f"consortium ready: gateway {net.gateway_url}, ledger '{net.opt.ledger}', {args.dir}/local.json")
        if net.opt.sawtooth:
            print(f"Sawtooth REST API: {net.gateway_url} (families {', '.join(net.opt.sawtooth)})")
            for name, endpoint in net.tp_endpoints.items():
                print(f"  {name} TP endpoint: {endpoint}")
        if net.eth_accounts:
            print(f"Ethereum JSON-RPC: {net.gateway_url}/rpc (chain id {net.opt.eth_chain_id})")
            print("Development accounts (10000 ETH each; the keys are in local.json):")
            for i, a in enumerate(net.eth_accounts):
                print(f"  ({i}) {a['address']}  {a['private_key']}")
        for party in net.quorum_parties:
            print(f"Quorum party of {party['member']}: {party['rpc']} key {party['public_key']} (token in local.json)")
        print("Ctrl-C stops it.", flush=True)
        while not stop:
            net.supervise_once()
            time.sleep(0.5)
    finally:
        net.stop()
    return 0


async def _node_status(nats_url: str, ledger: str, names: list[str]) -> list[dict[str, Any]]:
    nc = await connect_nats(nats_url, "cli")
    out = []
    try:
        for name in names:
            try:
                msg = await nc.request(
                    streams.node_query_subject(ledger, name), dumps({"type": "node_status"}), timeout=3
                )
                st = loads(msg.data)
                out.append(
                    {
                        "name": name,
                        "committed_height": st.get("committed_height"),
                        "root": st.get("root"),
                        "executed_height": st.get("executed_height"),
                        "ready": st.get("ready"),
                        "reason": st.get("reason"),
                        "refused_files": st.get("refused_files", []),
                    }
                )
            except Exception as e:
                out.append({"name": name, "committed_height": None, "root": None, "error": type(e).__name__})
    finally:
        await nc.close()
    return out


def _sequencer_active(host: str, port: int) -> bool | None:
    try:
        with urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
            return bool(json.loads(r.read()).get("reason") == "active")
    except (URLError, OSError, ValueError):
        return None


def cmd_status(args: argparse.Namespace) -> int:
    if not args.net:
        raise CliError("local status needs --net DIR")
    net = load_net(args.net)
    procs = net["processes"]
    executors = [p["name"] for p in procs if p["name"].startswith("executor-")]
    status = {
        "executors": asyncio.run(_node_status(net["nats_url"], net.get("ledger", "local"), executors)),
        "sequencers": [
            {"name": p["name"], "active": _sequencer_active(p.get("host", "127.0.0.1"), p["port"])}
            for p in procs
            if p["name"].startswith("sequencer-")
        ],
    }
    print(json.dumps(status, indent=2))
    return 0


async def _demo_traffic(net: LocalNetwork, count: int) -> dict[str, Any]:
    users = [PrivateKey.from_file(str(net.dir / u["key"])) for u in net.users]
    trust = net.trust()
    identity = consortium.load_trusted(trust["consortium"])
    clients = [Client(net.gateway_url, k, **trust) for k in users]
    try:
        t0 = time.perf_counter()
        jobs = [clients[i % len(clients)].put("public:greetings", f"hello-{i}", {"n": i}) for i in range(count)]
        jobs.append(clients[0].put("secrets", "diary", "only user0 reads this"))
        hashes = await asyncio.gather(*jobs)
        statuses = await asyncio.gather(*(clients[0].wait(h) for h in hashes))
        elapsed = time.perf_counter() - t0
        committed = sum(s["status"] == "Committed" for s in statuses)
        for c in clients[1:]:
            c.seen_height = clients[0].seen_height  # read at least what the writes were seen at
        receipts = await asyncio.gather(*(clients[0].receipt(h) for h in hashes))
        verified = 0
        for h, r in zip(hashes, receipts, strict=True):
            receipt.verify(r, identity, tx_hash=h)
            verified += 1
        public = await clients[1].get("public:greetings", "hello-0")
        private = await clients[0].get("secrets", "diary")
        try:
            await clients[1].get("secrets", "diary")
            other_user_can_read = True
        except ClientError:
            other_user_can_read = False
        return {
            "transactions": len(hashes),
            "committed": committed,
            "receipts_verified": verified,
            "seconds": round(elapsed, 2),
            "public_read": public,
            "private_read_by_writer": private,
            "private_read_by_other_user_refused": not other_user_can_read,
            "signers_per_receipt": len(receipts[0]["signatures"]),
            "members_needed_per_receipt": identity.threshold,
        }
    finally:
        for c in clients:
            await c.close()


def cmd_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="conclavium-demo-") as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp)
        net = LocalNetwork(directory, NetworkOptions())
        print(f"starting a local consortium in {directory}: NATS, 3 executors (one per member), sequencer, gateway")
        try:
            t0 = time.perf_counter()
            net.start()
            print(f"ready in {time.perf_counter() - t0:.1f}s; gateway {net.gateway_url}")
            result = asyncio.run(_demo_traffic(net, args.count))
        finally:
            net.stop()
    print(json.dumps(result, indent=2))
    ok = (
        result["committed"] == result["transactions"] == result["receipts_verified"]
        and result["private_read_by_other_user_refused"]
    )
    print(
        "demo "
        + (
            "succeeded: every transaction committed and every receipt verified offline against the consortium identity"
            if ok
            else "FAILED"
        )
    )
    return 0 if ok else 1


def register(sub: Any) -> None:
    local = sub.add_parser("local", help="a local consortium").add_subparsers(dest="local_command", required=True)
    up = local.add_parser("up", help="start a local consortium in the foreground")
    up.add_argument("--dir", required=True)
    up.add_argument("--executors", type=int, default=3)
    up.add_argument("--members", type=int, default=None, help="default: 3 (1 with a single executor)")
    up.add_argument("--users", type=int, default=2)
    up.add_argument("--sequencers", type=int, default=1)
    up.add_argument("--no-redis", action="store_true")
    up.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="N",
        help="run N NATS servers as one JetStream cluster (streams and the KV bucket at min(N, 3) replicas)",
    )
    up.add_argument(
        "--eth", action="store_true", help="run the Ethereum application: JSON-RPC on /rpc, funded development accounts"
    )
    up.add_argument(
        "--quorum",
        action="store_true",
        help="also run Quorum private transactions (implies --eth): each member's party endpoint, key and "
        "access token in local.json (docs/quorum.md)",
    )
    up.add_argument(
        "--sawtooth",
        metavar="FAMILIES",
        help="run the Sawtooth application with these transaction families' TPs (intkey, xo or intkey,xo): "
        "REST API on the gateway, one TP endpoint per executor (docs/sawtooth.md)",
    )
    up.set_defaults(func=cmd_up)
    st = local.add_parser("status", help="executors' committed heights and roots, sequencers' roles")
    st.set_defaults(func=cmd_status)
    demo = sub.add_parser("demo", help="start a local consortium, commit transactions, verify receipts, stop")
    demo.add_argument("--count", type=int, default=200)
    demo.add_argument("--dir")
    demo.set_defaults(func=cmd_demo)
