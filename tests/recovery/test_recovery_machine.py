"""Recovery in the deterministic core, block by block: share sets, opening, members' shares and
completion, with every refusal an Invalid entry with its reason (never an exception), and the
recovering node's own scan (`RecoveryScan`) of the same blocks."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from typing import Any

import pytest

from conclavium import node_messages, recovery
from conclavium.block import CommitSig, Entry, Kind, decode_block, statement
from conclavium.chain import Tip
from conclavium.consortium import make_node_endorsement
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.governance import recovery as gov_recovery
from conclavium.identity import node_certificate
from conclavium.recovery import share_document
from services.executor.enclave import LedgerSecrets, NodeKeys
from services.executor.ledger_machine import NODES
from services.executor.recovery import RecoveryScan
from tests.executor.machine_harness import LEDGER, Chain, Node, bootstrap, new_machine


class Members:
    def __init__(self, chain: Chain) -> None:
        self.keys = [chain.member, PrivateKey.generate(), PrivateKey.generate()]
        self.enc = [sealing.generate_key() for _ in self.keys]

    def config(self) -> dict[str, Any]:
        rows = [
            {"name": name, "public_key": k.public_key.pem, "encryption_key": sealing.public_bytes(e).hex()}
            for name, k, e in zip(("alice", "bob", "carol"), self.keys, self.enc, strict=True)
        ]
        return {"members": rows, "recovery_threshold": 2}

    def holders(self) -> dict[str, bytes]:
        return {k.key_id: sealing.public_bytes(e) for k, e in zip(self.keys, self.enc, strict=True)}


def share_set_entry(chain: Chain, members: Members, secrets: LedgerSecrets, **change: Any) -> Entry:
    issued = recovery.issue(secrets.to_bytes(), LEDGER, members.holders(), change.pop("threshold", 2))
    pems = {k.key_id: k.public_key.pem for k in members.keys}
    shares = {m: {**s, "public_key": pems[m]} for m, s in issued.shares.items()}
    for m in change.pop("drop", []):
        shares.pop(m)
    msg = node_messages.RecoveryShares(
        v=1,
        ledger=LEDGER,
        ts=chain.ts,
        sender=chain.nodes[change.pop("by", 0)].id if "key" not in change else change["key"].key_id,
        id=issued.id,
        threshold=change.pop("claimed", 2),
        generations=change.pop("generations", [secrets.current.id]),
        wrapped=issued.wrapped,
        shares=shares,
    )
    return node_messages.make_entry(msg, change.pop("key", chain.nodes[0].key))


def open_entry(chain: Chain, node: Node, set_id: str) -> Entry:
    msg = node_messages.RecoveryOpen(v=1, ledger=LEDGER, ts=chain.ts, node=node.info("rec"), set=set_id)
    return node_messages.make_entry(msg, node.key)


def member_share(members: Members, i: int, status: dict[str, Any], node: Node, who: PrivateKey | None = None) -> Entry:
    """Member i opens its share and seals it to `node`, as `conclavium gov recovery-share` does."""
    mid = members.keys[i].key_id
    mine = status["members"][mid]
    share = recovery.open_member_share(mine["box"], members.enc[i], LEDGER, status["id"], mid, mine["digest"])
    box = recovery.seal_to_node(share, sealing.public_bytes(node.enc), LEDGER, status["id"], mid, node.id)
    doc = share_document(who or members.keys[i], LEDGER, status["id"], node.id, box, int(time.time()))
    return Entry(Kind.GOV, doc, b"")


def recovered_entry(
    chain: Chain,
    node: Node,
    set_id: str,
    used: list[str],
    signer: PrivateKey | None = None,
    cert_key: PrivateKey | None = None,
) -> Entry:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = node_certificate(cert_key or chain.service_key, chain.service_cert, node.key.public_key, now)
    msg = node_messages.Recovered(v=1, ledger=LEDGER, ts=chain.ts, sender=node.id, set=set_id, members=used, cert=cert)
    return node_messages.make_entry(msg, signer or node.key)


async def apply(machine: Any, chain: Chain, raws: list[bytes], *entries: Entry) -> list[tuple[str, str]]:
    raw, seq = chain.block(list(entries))
    raws.append(raw)
    _, out = await machine.apply(raw, seq)
    return [(code, message) for _, code, message in out.invalid]


async def test_share_sets_recovery_and_refusals() -> None:
    chain = Chain()
    members = Members(chain)
    machine = new_machine(chain)
    await bootstrap(chain, machine, members.config(), endorsers=members.keys)
    raws: list[bytes] = []
    alice, bob, carol = (k.key_id for k in members.keys)

    # Share sets: only an exact one from a trusted node is recorded.
    stranger = PrivateKey.generate()
    assert (await apply(machine, chain, raws, share_set_entry(chain, members, chain.secrets, key=stranger)))[0][0] == (
        "bad_signature"
    )
    refused = await apply(
        machine,
        chain,
        raws,
        share_set_entry(chain, members, chain.secrets, threshold=3, claimed=3),
        share_set_entry(chain, members, chain.secrets, drop=[carol]),
        share_set_entry(chain, members, chain.secrets, generations=["00" * 32]),
    )
    assert [c for c, _ in refused] == ["stale_share_set"] * 3
    assert gov_recovery.share_set(machine.state) is None
    assert not await apply(machine, chain, raws, share_set_entry(chain, members, chain.secrets))
    status = gov_recovery.share_set(machine.state)
    assert status is not None and status["threshold"] == 2 and sorted(status["members"]) == sorted([alice, bob, carol])

    # Before a recovery is open, a share is refused; a recovery names the set in force.
    r, other = Node(), Node()
    assert (await apply(machine, chain, raws, member_share(members, 0, status, r)))[0][0] == "no_recovery"
    assert (await apply(machine, chain, raws, open_entry(chain, r, "ab" * 32)))[0][0] == "stale_share_set"
    assert not await apply(machine, chain, raws, open_entry(chain, other, status["id"]))  # nobody answers it
    assert not await apply(machine, chain, raws, open_entry(chain, r, status["id"]))  # replaces it: no shares
    assert gov_recovery.open_recovery(machine.state)["node"] == r.id

    # Members' shares: a user, another node, a second copy are refused; fewer than k cannot complete.
    user_doc = member_share(members, 0, status, r, who=chain.user)
    assert "is a user" in (await apply(machine, chain, raws, user_doc))[0][1]
    assert (await apply(machine, chain, raws, member_share(members, 0, status, other)))[0][0] == "wrong_node"
    assert not await apply(machine, chain, raws, member_share(members, 0, status, r))
    assert (await apply(machine, chain, raws, member_share(members, 0, status, r)))[0][0] == "duplicate_share"
    assert (await apply(machine, chain, raws, open_entry(chain, other, status["id"])))[0][0] == "recovery_open"
    early = recovered_entry(chain, r, status["id"], [alice])
    assert (await apply(machine, chain, raws, early))[0][0] == "too_few_shares"
    bad = recovery.seal_to_node(os.urandom(17), sealing.public_bytes(r.enc), LEDGER, status["id"], carol, r.id)
    carol_bad = Entry(Kind.GOV, share_document(members.keys[2], LEDGER, status["id"], r.id, bad, 0), b"")
    assert not await apply(machine, chain, raws, carol_bad)  # the ledger cannot read it: recorded
    assert not await apply(machine, chain, raws, member_share(members, 1, status, r))

    # Completion: the certificate must be the service's for the recovering node, signed by it.
    forged = recovered_entry(chain, r, status["id"], [alice, bob], cert_key=PrivateKey.generate())
    assert (await apply(machine, chain, raws, forged))[0][0] == "bad_certificate"
    impostor = recovered_entry(chain, r, status["id"], [alice, bob], signer=other.key)
    assert (await apply(machine, chain, raws, impostor))[0][0] == "bad_signature"
    pending_before = len(machine.uncommitted)
    assert pending_before > 0  # the lost nodes left blocks uncommitted
    assert not await apply(machine, chain, raws, recovered_entry(chain, r, status["id"], [alice, bob]))
    trusted = {nid for nid, row in machine.state.items(NODES) if row["status"] == "Trusted"}
    # The recovered node is a new key: no node counts for commits until its member endorses it,
    # and then nodes of one member (k = 2) commit nothing (docs/recovery.md, steps 5 and 6).
    assert trusted == {r.id} and machine.quorum() == 0
    assert "nodes of 0 member(s) can sign" in str(machine.quorum_problem())
    assert {row["status"] for nid, row in machine.state.items(NODES) if nid != r.id} == {"Retired"}
    assert all(rec.quorum == 0 and not rec.signatures for rec in machine.uncommitted.values())
    nb = chain.ts // 1000 - 60
    endorsement = make_node_endorsement(members.keys[0], LEDGER, r.key.public_key.pem, nb, nb + 86400)
    assert not await apply(machine, chain, raws, Entry(Kind.GOV, endorsement, b""))
    assert machine.quorum() == 1 and "nodes of 1 member(s) can sign" in str(machine.quorum_problem())
    alone = [
        CommitSig(
            r.id,
            rec.height,
            rec.hash,
            rec.root,
            rec.quorum,
            r.key.sign(statement(LEDGER, rec.height, rec.hash, rec.root, rec.quorum, rec.ts_ms)),
            rec.ts_ms,
        )
        for rec in machine.uncommitted.values()
    ]
    pending = len(machine.uncommitted)
    raw, seq = chain.block([], alone)
    raws.append(raw)
    await machine.apply(raw, seq)
    assert len(machine.uncommitted) >= pending, "one member's node committed alone"
    assert gov_recovery.open_recovery(machine.state) is None
    assert machine.state.get("public:gov.recovery", "last")["members"] == sorted([alice, bob])
    assert (await apply(machine, chain, raws, recovered_entry(chain, r, status["id"], [alice, bob])))[0][0] == (
        "no_recovery"
    )

    # The recovering node's own view of the same blocks: good shares kept, the bad one refused.
    scan = RecoveryScan(LEDGER, _tip_before(raws[0]), NodeKeys(r.key, r.enc), _trusted(chain), None)
    for raw in raws:
        scan.feed(raw)
    assert scan.share_set is not None and scan.share_set.id == status["id"] and scan.opened
    assert sorted(scan.shares) == sorted([alice, bob])
    assert scan.refused[carol].startswith("bad_share") and scan.refused[chain.user.key_id].startswith(
        "not_share_holder"
    )
    secrets, used = scan.reconstruct(chain.service_cert)
    assert used == sorted([alice, bob]) and secrets.to_bytes() == chain.secrets.to_bytes()


def _trusted(chain: Chain) -> dict[str, Any]:
    return {n.id: n.key.public_key for n in chain.nodes}


def _tip_before(raw: bytes) -> Tip:
    """The chain's tip before `raw` (where the recovering node's replay stopped)."""
    first = decode_block(raw)
    return Tip(first.height - 1, first.prev, 0, 0)


@pytest.mark.parametrize("k,n", [(1, 1), (1, 3), (2, 3), (3, 5), (5, 5)])
def test_any_k_shares_and_no_fewer_reconstruct(k: int, n: int) -> None:
    key = os.urandom(16)
    shares = recovery.split_key(key, k, n)
    assert len(shares) == n and all(len(s) == recovery.SHARE_BYTES for s in shares)
    for start in range(n - k + 1):
        assert recovery.combine(shares[start : start + k], k) == key
    if k > 1:
        with pytest.raises(recovery.RecoveryError) as e:
            recovery.combine(shares[: k - 1], k)
        assert e.value.code == "too_few_shares"
        wrong = recovery.combine([*shares[: k - 1], bytes([shares[k - 1][0]]) + os.urandom(16)], k)
        assert wrong != key


def test_wrap_shares_and_their_bindings() -> None:
    secret = b'{"service_key": "..."}'
    holders = {m: sealing.generate_key() for m in ("a" * 64, "b" * 64, "c" * 64)}
    issued = recovery.issue(secret, LEDGER, {m: sealing.public_bytes(k) for m, k in holders.items()}, 2)
    wrapped = base64.b64decode(issued.wrapped)
    assert recovery.set_id(wrapped) == issued.id and secret not in wrapped
    opened = {
        m: recovery.open_member_share(issued.shares[m]["box"], k, LEDGER, issued.id, m, issued.shares[m]["digest"])
        for m, k in holders.items()
    }
    key = recovery.combine([opened["a" * 64], opened["c" * 64]], 2)
    assert recovery.unwrap_secrets(wrapped, key, LEDGER) == secret
    with pytest.raises(recovery.RecoveryError) as e:
        recovery.unwrap_secrets(wrapped, key, "another-ledger")
    assert e.value.code == "shares_do_not_combine"
    with pytest.raises(recovery.RecoveryError) as e:  # another member's key
        recovery.open_member_share(issued.shares["a" * 64]["box"], holders["b" * 64], LEDGER, issued.id, "a" * 64, "")
    assert e.value.code == "wrong_key"
    with pytest.raises(recovery.RecoveryError) as e:  # a digest that is not the share's
        recovery.open_member_share(
            issued.shares["a" * 64]["box"], holders["a" * 64], LEDGER, issued.id, "a" * 64, "00" * 32
        )
    assert e.value.code == "bad_share"
    node = sealing.generate_key()
    box = recovery.seal_to_node(opened["a" * 64], sealing.public_bytes(node), LEDGER, issued.id, "a" * 64, "n1")
    digest = issued.shares["a" * 64]["digest"]
    assert recovery.open_at_node(box, node, LEDGER, issued.id, "a" * 64, "n1", digest) == opened["a" * 64]
    for member, node_id in (("b" * 64, "n1"), ("a" * 64, "n2")):  # moved to another member or node
        with pytest.raises(recovery.RecoveryError) as e:
            recovery.open_at_node(box, node, LEDGER, issued.id, member, node_id, digest)
        assert e.value.code == "undecryptable_share"
