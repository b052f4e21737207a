"""`conclavium k8s join-bundle`: what a second Kubernetes cluster needs to run a member's nodes on a
ledger another cluster already runs (docs/kubernetes.md, "Walk-through: a second cluster joins").

The bundle is three files, all JSON (a YAML subset, so `helm -f` and `kubectl apply -f` read them):
`values.json` (the chart values that must match the first cluster: the ledger id, this cluster's id,
the shared NATS), `resources.json` (a List: the Consortium without its genesis fields, and the
member with `membership: External`, so nothing in the second cluster proposes the membership) and
`service.pem` (the ledger's service certificate, to pin). Nothing secret is in it: the member's
identity Secret is created by the member in the second cluster.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from conclavium.crypto.keys import KeyError_, PublicKey

from .context import CliError, client

CLUSTER_ID = re.compile(r"^[a-z0-9]([-a-z0-9]{0,14}[a-z0-9])?$")
MEMBER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# Fields of a Consortium that only the first cluster uses (genesis is made once, there).
GENESIS_ONLY = ("foundingMembers",)


def _consortium(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise CliError(f"{path} is not JSON (kubectl get consortium NAME -o json): {e}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "Consortium" or not isinstance(doc.get("spec"), dict):
        raise CliError(f"{path} is not a Consortium object (kubectl get consortium NAME -o json)")
    if not isinstance(doc["spec"].get("ledgerId"), str):
        raise CliError(f"{path}: the Consortium has no spec.ledgerId")
    return doc


def bundle(
    consortium: dict[str, Any],
    member: str,
    key: PublicKey,
    args: argparse.Namespace,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(chart values, resource List) for the second cluster."""
    spec = {k: v for k, v in consortium["spec"].items() if k not in GENESIS_ONLY}
    name = consortium["metadata"]["name"]
    values = {"ledgerId": spec["ledgerId"], "clusterId": args.cluster_id, "nats": {"url": args.nats_url}}
    secret_ref: dict[str, Any] = {"name": f"{member}-identity", "certificateKey": "tls.crt"}
    identity: dict[str, Any] = {"keyAlgorithm": key.alg, "secretRef": secret_ref}
    if args.in_cluster_signing:
        secret_ref["privateKeyKey"] = "private.key"
        identity["inClusterSigning"] = True
    member_spec: dict[str, Any] = {
        "consortiumRef": {"name": name},
        "memberId": member,
        "role": args.role,
        "membership": "External",
        "deletionPolicy": "Retire",
        "identity": identity,
        "executors": args.executors,
    }
    items = [
        {
            "apiVersion": consortium.get("apiVersion", "conclavium.io/v1alpha1"),
            "kind": "Consortium",
            "metadata": {"name": name},
            "spec": spec,
        },
        {
            "apiVersion": "conclavium.io/v1alpha1",
            "kind": "ConsortiumMember",
            "metadata": {"name": member},
            "spec": member_spec,
        },
    ]
    return values, {"apiVersion": "v1", "kind": "List", "items": items}


async def cmd_join_bundle(args: argparse.Namespace) -> int:
    if not CLUSTER_ID.match(args.cluster_id):
        raise CliError(f"--cluster-id {args.cluster_id!r}: 1-16 lowercase letters, digits and '-'")
    if not MEMBER_NAME.match(args.member):
        raise CliError(f"--member {args.member!r} is not a ConsortiumMember name (a DNS label)")
    consortium = _consortium(Path(args.consortium_object))
    try:
        key = PublicKey.load(Path(args.public_key).read_bytes())
    except KeyError_ as e:
        raise CliError(f"{args.public_key} is not a public key: {e}") from None
    async with client(args) as c:
        service = await c.service()
    ledger = consortium["spec"]["ledgerId"]
    if service.get("ledger") != ledger:
        raise CliError(f"the gateway serves ledger {service.get('ledger')!r}, the Consortium names {ledger!r}")
    if not service.get("service_cert"):
        raise CliError(f"ledger {ledger} has no service certificate yet: create it (genesis) in the first cluster")
    values, resources = bundle(consortium, args.member, key, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "values.json").write_text(json.dumps(values, indent=2) + "\n")
    (out / "resources.json").write_text(json.dumps(resources, indent=2) + "\n")
    (out / "service.pem").write_text(service["service_cert"])
    people = service.get("users" if args.role == "Participant" else "members") or []
    print(
        json.dumps(
            {
                "values": str(out / "values.json"),
                "resources": str(out / "resources.json"),
                "service_cert": str(out / "service.pem"),
                "key_id": key.key_id,
                "member_active": any(p.get("id") == key.key_id for p in people),
            }
        )
    )
    return 0


def register(sub: Any) -> None:
    k8s = sub.add_parser("k8s", help="Kubernetes").add_subparsers(dest="k8s_command", required=True)
    p = k8s.add_parser(
        "join-bundle",
        help="write what a second cluster needs to run a member's nodes on this ledger: chart values, the "
        "Consortium and an External ConsortiumMember, the service certificate (needs --gateway)",
    )
    p.add_argument(
        "--consortium-object", required=True, help="the Consortium as `kubectl get consortium NAME -o json` prints it"
    )
    p.add_argument("--member", required=True, help="the member's ConsortiumMember name and memberId")
    p.add_argument("--public-key", required=True, help="the member's public key (PEM)")
    p.add_argument("--cluster-id", required=True, help="the second cluster's id (chart value clusterId)")
    p.add_argument("--nats-url", required=True, help="the ledger's NATS as the second cluster reaches it")
    p.add_argument("--executors", type=int, default=1, choices=range(0, 17), metavar="0-16")
    p.add_argument("--role", choices=("Voting", "Participant"), default="Voting")
    p.add_argument(
        "--in-cluster-signing",
        action="store_true",
        help="the member lets the second cluster's operator sign with its key (development consortiums only; "
        "the Secret then needs private.key)",
    )
    p.add_argument("--out", required=True, help="directory for values.json, resources.json and service.pem")
    p.set_defaults(afunc=cmd_join_bundle)
