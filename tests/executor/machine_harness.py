"""Build real blocks in-process for the executor's deterministic core: a genesis by a node whose
keys the test holds, joins and endorsements, client transactions, commit and clock signatures."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from conclavium import node_messages, rules
from conclavium.attestation import expected_report_data, make_virtual_evidence
from conclavium.block import (
    BLOCK_VERSION,
    Block,
    ClockSig,
    CommitSig,
    Entry,
    Kind,
    block_hash,
    clock_statement,
    encode,
    statement,
)
from conclavium.consortium import genesis_digest, make_identity, make_node_endorsement
from conclavium.consortium import sign as sign_identity
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e
from conclavium.governance.constitution import default_constitution
from conclavium.identity import node_certificate, sign_tx_key
from conclavium.node_messages import VIRTUAL_DEV_MEASUREMENT
from conclavium.tx import make_body, sign
from services.executor.enclave import LedgerSecrets
from services.executor.ledger_machine import LedgerMachine
from services.executor.outcome import BlockRecord
from services.executor.verifier import BatchVerifier

LEDGER = "unit"


@dataclass
class Node:
    key: PrivateKey = field(default_factory=PrivateKey.generate)
    enc: Any = field(default_factory=sealing.generate_key)
    measurement: str = VIRTUAL_DEV_MEASUREMENT

    @property
    def id(self) -> str:
        return self.key.key_id

    def info(self, name: str) -> node_messages.NodeInfo:
        enc_raw = sealing.public_bytes(self.enc)
        bound = node_messages.bound_keys(self.key.public_key.spki, enc_raw)
        ev = make_virtual_evidence(bytes.fromhex(self.measurement), b"", expected_report_data(bound))
        return node_messages.NodeInfo(
            id=self.id,
            signing_key=self.key.public_key.pem,
            encryption_key=enc_raw.hex(),
            evidence={"platform": "virtual", "evidence": b64e(ev)},
            name=name,
        )


class Chain:
    """A ledger under construction: blocks are encoded exactly as the sequencer would."""

    def __init__(self, nodes: int = 3) -> None:
        self.nodes = [Node() for _ in range(nodes)]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        self.secrets = LedgerSecrets.create(LEDGER, now)
        self.service_key = self.secrets.service_key
        self.service_cert = self.secrets.service_cert
        self.member = PrivateKey.generate()
        self.user = PrivateKey.generate()
        self.height = 0
        self.prev = bytes(32)
        self.ts = int(time.time() * 1000)
        self.seq = 0
        self.times: dict[int, int] = {}  # height -> the time it was stamped (its ledger time unless bounded)
        self.timed = True  # commit signatures cover the ledger time (rules version 4 on)

    def block(
        self,
        entries: list[Entry],
        sigs: list[CommitSig] | None = None,
        clocks: list[ClockSig] | None = None,
        ts: int | None = None,
    ) -> tuple[bytes, int]:
        """The next block, stamped `ts` (default: the chain's clock). Unless `clocks` is given it
        carries every node's clock signature at the chain's clock, as honest executors send them."""
        self.height += 1
        self.ts += 10
        if clocks is None:
            clocks = [self.clock(i, self.ts) for i in range(len(self.nodes))]
        self.times[self.height] = self.ts if ts is None else ts
        block = Block(
            BLOCK_VERSION, LEDGER, self.height, self.prev, self.times[self.height], entries, sigs or [], clocks
        )
        raw = encode(block)
        self.prev = block_hash(raw)
        self.seq += 1
        return raw, self.seq

    def genesis_entry(
        self,
        node_policy: dict[str, Any] | None = None,
        measurements: list[dict[str, Any]] | None = None,
        info: node_messages.NodeInfo | None = None,
        at: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> Entry:
        """The genesis by node 0 (`info` replaces its evidence-bearing NodeInfo, e.g. a TDX one),
        signed at `at` (default: the chain's clock), `config` merged into its configuration."""
        n0 = self.nodes[0]
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        config = {
            "members": [{"name": "alice", "public_key": self.member.public_key.pem}],
            "users": [{"name": "u", "public_key": self.user.public_key.pem}],
            "node_policy": node_policy or {"environment": "development", "platforms": ["virtual"]},
            "measurements": measurements or [{"platform": "virtual", "measurement": VIRTUAL_DEV_MEASUREMENT}],
            "constitution": {**default_constitution(), "auto_trust_nodes": True},
            **(config or {}),
        }
        if "consortium" not in config:  # signed by its one founder, as a genesis on TEE hardware must be
            founders = [{"name": "alice", "public_key": self.member.public_key.pem}]
            if config["members"] == founders:
                doc = make_identity(LEDGER, founders, genesis=genesis_digest(config))
                config["consortium"] = sign_identity(doc, self.member)
        elif config["consortium"] is None:
            del config["consortium"]
        cert = node_certificate(self.service_key, self.service_cert, n0.key.public_key, now)
        msg = node_messages.Genesis(
            v=1,
            ledger=LEDGER,
            ts=self.ts if at is None else at,
            node=info or n0.info("n0"),
            service_cert=self.service_cert,
            node_cert=cert,
            config=config,
            tx_key=sign_tx_key(self.service_key, LEDGER, self.secrets.current.id, self.secrets.current.tx_public),
        )
        return node_messages.make_entry(msg, n0.key)

    def join_entry(self, i: int) -> Entry:
        msg = node_messages.Join(v=1, ledger=LEDGER, ts=self.ts, node=self.nodes[i].info(f"n{i}"))
        return node_messages.make_entry(msg, self.nodes[i].key)

    def endorse_entry(self, i: int) -> Entry:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cert = node_certificate(self.service_key, self.service_cert, self.nodes[i].key.public_key, now)
        msg = node_messages.Endorse(
            v=1,
            ledger=LEDGER,
            ts=self.ts,
            sender=self.nodes[0].id,
            node=self.nodes[i].id,
            cert=cert,
            wrapped_secrets=b64e(b"unused in unit tests"),
        )
        return node_messages.make_entry(msg, self.nodes[0].key)

    def member_endorse_entry(self, i: int, member: PrivateKey | None = None, days: int = 365) -> Entry:
        """The member's endorsement of node i (`conclavium.consortium`), valid from a minute ago."""
        nb = self.ts // 1000 - 60
        pem = self.nodes[i].key.public_key.pem
        doc = make_node_endorsement(member or self.member, LEDGER, pem, nb, nb + days * 86400)
        return Entry(Kind.GOV, doc, b"")

    def tx(self, key: str, value: Any, sender: PrivateKey | None = None, ts: int | None = None) -> Entry:
        who = sender or self.user
        ops = [{"op": "put", "map": "public:t", "key": key, "value": value}]
        t = sign(who, make_body(LEDGER, who.key_id, ops, self.ts if ts is None else ts))
        return Entry(Kind.TX, t.body, t.signature)

    def clock(self, i: int, clock_ms: int) -> ClockSig:
        node = self.nodes[i]
        return ClockSig(node.id, clock_ms, node.key.sign(clock_statement(LEDGER, node.id, clock_ms)))

    def sig(self, i: int, height: int, bhash: bytes, root: bytes, quorum: int, ts_ms: int | None = None) -> CommitSig:
        """Node i's commit signature, at the time the block at `height` was stamped unless `ts_ms`
        says otherwise; without a time while the chain is not `timed`."""
        at = (self.times.get(height, 0) if ts_ms is None else ts_ms) if self.timed else None
        s = self.nodes[i].key.sign(statement(LEDGER, height, bhash, root, quorum, at))
        return CommitSig(self.nodes[i].id, height, bhash, root, quorum, s, at)

    def sig_of(self, i: int, rec: BlockRecord, root: bytes | None = None) -> CommitSig:
        """Node i's commit signature on an executed block, as an honest executor signs it (over
        another `root` when given)."""
        root = rec.root if root is None else root
        ts = rec.signed_time()
        s = self.nodes[i].key.sign(statement(LEDGER, rec.height, rec.hash, root, rec.quorum, ts))
        return CommitSig(self.nodes[i].id, rec.height, rec.hash, root, rec.quorum, s, ts)


async def bootstrap(
    chain: Chain,
    machine: LedgerMachine,
    config: dict[str, Any] | None = None,
    endorsers: list[PrivateKey] | None = None,
) -> None:
    """Genesis, two joins and their endorsements, and an open_service vote: three signing nodes.
    `endorsers`: the member that endorses each node, when the configuration names several members
    (a commit needs nodes of a majority of them); by default the one member of the harness."""
    from conclavium.governance import documents

    await machine.apply(*chain.block([chain.genesis_entry(config=config)]))
    chain.timed = machine.rules_version() >= rules.SIGNED_TIME_FROM
    await machine.apply(*chain.block([chain.join_entry(1), chain.join_entry(2)]))
    await machine.apply(*chain.block([chain.endorse_entry(1), chain.endorse_entry(2)]))
    by = endorsers or [chain.member] * 3
    await machine.apply(*chain.block([chain.member_endorse_entry(i, by[i]) for i in range(3)]))
    doc = documents.make_proposal([{"name": "open_service", "args": {}}], chain.member, chain.ts // 1000, ledger=LEDGER)
    await machine.apply(*chain.block([Entry(Kind.GOV, doc, b"")]))
    pid = hashlib.sha256(doc).hexdigest()
    ballot = documents.make_ballot(pid, True, chain.member, chain.ts // 1000, ledger=LEDGER)
    await machine.apply(*chain.block([Entry(Kind.GOV, ballot, b"")]))
    assert len(machine.trusted_node_keys()) == 3
    sigs = [chain.sig_of(i, r) for r in machine.uncommitted.values() for i in range(3)]
    await machine.apply(*chain.block([], sigs))
    assert not machine.uncommitted


def new_machine(chain: Chain | None = None) -> LedgerMachine:
    """A machine holding the chain's ledger secrets, as a trusted executor would."""
    return LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets if chain else None)
