"""Node messages on hand-built blocks: what `node_auth` accepts, from whom, when, and how often;
and a joining node's scan for its secrets (`JoinScan`)."""

from __future__ import annotations

import datetime as dt
import hashlib

from machine_harness import LEDGER, Chain, Node, bootstrap, new_machine

from conclavium import node_messages
from conclavium.block import BLOCK_VERSION, Block, CommitSig, Entry, Kind, encode, statement
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey
from conclavium.encoding import b64e
from conclavium.governance import documents
from conclavium.identity import node_certificate, sign_tx_key
from services.executor.enclave import Generation, LedgerSecrets, NodeKeys
from services.executor.ledger_machine import REKEY, LedgerMachine
from services.executor.node_auth import JoinScan
from services.executor.verifier import BatchVerifier


def _keys(node: Node) -> NodeKeys:
    return NodeKeys(node.key, node.enc)


def _endorse(chain: Chain, signer: PrivateKey, node: Node, secrets: LedgerSecrets, sender: str | None = None) -> Entry:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = node_certificate(chain.service_key, chain.service_cert, node.key.public_key, now)
    enc = sealing.public_bytes(node.enc)
    msg = node_messages.Endorse(
        v=1,
        ledger=LEDGER,
        ts=chain.ts,
        sender=sender or signer.key_id,
        node=node.id,
        cert=cert,
        wrapped_secrets=b64e(secrets.wrap(enc, node_messages.secrets_context(LEDGER, node.id))),
    )
    return node_messages.make_entry(msg, signer)


def _rekey(
    chain: Chain,
    machine: LedgerMachine,
    proposal: str,
    gen: Generation | None = None,
    ts: int = 0,
    extra: dict[str, Node] | None = None,
    bad_share_for: str = "",
) -> Entry:
    gen = gen or Generation.create()
    recipients = {n.id: n for n in chain.nodes if n.id in machine.trusted_node_keys()} | (extra or {})
    shares = {nid: gen.seal_share(LEDGER, nid, sealing.public_bytes(n.enc)) for nid, n in recipients.items()}
    if bad_share_for:
        shares[bad_share_for] = b64e(b"not a share")
    msg = node_messages.Rekey(
        v=1,
        ledger=LEDGER,
        ts=ts or chain.ts,
        sender=chain.nodes[0].id,
        proposal=proposal,
        generation=gen.id,
        tx_key=sign_tx_key(chain.service_key, LEDGER, gen.id, gen.tx_public),
        shares=shares,
    )
    return node_messages.make_entry(msg, chain.nodes[0].key)


async def _joined(chain: Chain) -> tuple[LedgerMachine, Node]:
    m = new_machine(chain)
    await bootstrap(chain, m)
    joiner = Node()
    chain.nodes.append(joiner)
    await m.apply(*chain.block([chain.join_entry(3)]))
    assert m.state.get("public:gov.nodes", joiner.id)["status"] == "Trusted"
    return m, joiner


async def test_join_scan_takes_only_a_committed_endorsement_by_a_trusted_node() -> None:
    chain = Chain()
    m, joiner = await _joined(chain)
    scan = JoinScan(
        LEDGER,
        m.tip,
        _keys(joiner),
        m.trusted_node_keys(),
        m.quorum(),
        chain.service_cert,
        m.signer_keys(),
        m.signer_members(),
        m.member_threshold(),
    )
    attacker = PrivateKey.generate()
    forged = LedgerSecrets(PrivateKey.generate("Ed25519"), chain.service_cert, [Generation.create()])
    # forged in the name of a trusted node, sealed to the joiner: ignored, even once "signed" by a quorum
    raw, _ = chain.block([_endorse(chain, attacker, joiner, forged, sender=chain.nodes[0].id)])
    forged_hash = chain.prev
    assert scan.feed(raw) is None
    sigs = [chain.sig(i, chain.height, forged_hash, bytes(32), 3) for i in range(3)]
    assert scan.feed(chain.block([], sigs)[0]) is None
    # a trusted node sends secrets whose service key is not the certificate's: ignored
    wrong = LedgerSecrets(PrivateKey.generate("Ed25519"), chain.service_cert, chain.secrets.generations)
    raw, _ = chain.block([_endorse(chain, chain.nodes[1].key, joiner, wrong)])
    wrong_height, wrong_hash = chain.height, chain.prev
    assert scan.feed(raw) is None
    sigs = [chain.sig(i, wrong_height, wrong_hash, bytes(32), 3) for i in range(3)]
    assert scan.feed(chain.block([], sigs)[0]) is None
    # a block that does not extend the chain is skipped like executors skip it
    rogue = encode(Block(BLOCK_VERSION, LEDGER, chain.height + 1, bytes(32), chain.ts, [], []))
    assert scan.feed(rogue) is None and scan.skipped == 1
    # the genuine endorsement counts once a commit quorum of trusted nodes signed its block
    raw, _ = chain.block([_endorse(chain, chain.nodes[0].key, joiner, chain.secrets)])
    height, bhash = chain.height, chain.prev
    assert scan.feed(raw) is None
    stranger = Node()
    assert scan.feed(chain.block([], [chain.sig(0, height, bhash, bytes(32), 3)])[0]) is None
    stmt = statement(LEDGER, height, bhash, bytes(32), 3)
    bogus = CommitSig(stranger.id, height, bhash, bytes(32), 3, stranger.key.sign(stmt))
    assert scan.feed(chain.block([], [bogus, chain.sig(0, height, bhash, bytes(32), 3)])[0]) is None
    taken = scan.feed(chain.block([], [chain.sig(1, height, bhash, bytes(32), 3)])[0])
    assert taken is not None and taken.service_key.public_key.spki == chain.service_key.public_key.spki
    assert [g.id for g in taken.generations] == [g.id for g in chain.secrets.generations]


async def _accepted_rotation(chain: Chain, m: LedgerMachine, n: int) -> str:
    """Accept the n-th rotate_ledger_secret proposal (n makes each document distinct)."""
    at = chain.ts // 1000 + n
    doc = documents.make_proposal([{"name": "rotate_ledger_secret", "args": {}}], chain.member, at, ledger=LEDGER)
    pid = hashlib.sha256(doc).hexdigest()
    ballot = documents.make_ballot(pid, True, chain.member, at, ledger=LEDGER)
    await m.apply(*chain.block([Entry(Kind.GOV, doc, b""), Entry(Kind.GOV, ballot, b"")]))
    assert m.state.get(REKEY, "pending")["proposal_id"] == pid
    return pid


async def test_rekey_is_bound_to_its_proposal_fresh_and_never_reuses_a_generation() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    p1 = await _accepted_rotation(chain, m, 1)
    gen1 = Generation.create()
    first = _rekey(chain, m, p1, gen1)
    _, out = await m.apply(*chain.block([first]))
    assert not out.invalid and m.state.get("public:gov.service", "secret_generation") == gen1.id
    p2 = await _accepted_rotation(chain, m, 2)
    cases = {
        "stale_rekey": _rekey(chain, m, p1),
        "generation_reused": _rekey(chain, m, p2, gen1),
        "expired": _rekey(chain, m, p2, ts=chain.ts - 10 * 60_000),
        "not_yet_valid": _rekey(chain, m, p2, ts=chain.ts + 10 * 60_000),
    }
    _, out = await m.apply(*chain.block(list(cases.values())))
    assert [code for _, code, _ in out.invalid] == list(cases)
    assert m.state.get("public:gov.service", "secret_generation") == gen1.id
    gen3 = Generation.create()
    _, out = await m.apply(*chain.block([_rekey(chain, m, p2, gen3)]))
    assert not out.invalid
    ids = [k["id"] for k in m.state.get("public:gov.service", "tx_keys")]
    assert ids[-2:] == [gen1.id, gen3.id] and len(ids) == len(set(ids))


async def test_join_evidence_with_certs_as_a_list_is_invalid() -> None:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    node = Node()
    info = node.info("certs-list")
    evidence = {"platform": "virtual", "evidence": info.evidence["evidence"], "certs": ["AA=="]}
    info = node_messages.NodeInfo(info.id, info.signing_key, info.encryption_key, evidence, info.name)  # type: ignore[arg-type]
    msg = node_messages.Join(v=1, ledger=LEDGER, ts=chain.ts, node=info)
    _, out = await m.apply(*chain.block([node_messages.make_entry(msg, node.key)]))
    [(_, code, message)] = out.invalid
    assert code == "invalid_node_message" and "certs" in message
    _, out = await m.apply(*chain.block([chain.tx("after", 1)]))
    assert not out.invalid



class _Both:
    """Two machines fed the same blocks: a trusted executor's and the joining node's own."""

    def __init__(self, first: LedgerMachine, second: LedgerMachine) -> None:
        self.first, self.second = first, second

    async def apply(self, raw: bytes, seq: int) -> tuple:
        out = await self.first.apply(raw, seq)
        await self.second.apply(raw, seq)
        assert self.first.tip.hash == self.second.tip.hash
        assert [(r.height, r.root) for r in self.first.uncommitted.values()] == [
            (r.height, r.root) for r in self.second.uncommitted.values()
        ]
        return out

    def __getattr__(self, name: str) -> object:
        return getattr(self.first, name)


async def test_a_share_ordered_before_the_endorsement_is_kept_and_a_bad_share_decides_nothing() -> None:
    chain = Chain()
    joiner = Node()
    own = LedgerMachine(LEDGER, BatchVerifier(1), node_keys=_keys(joiner))
    both = _Both(new_machine(chain), own)
    await bootstrap(chain, both)  # type: ignore[arg-type]
    chain.nodes.append(joiner)
    await both.apply(*chain.block([chain.join_entry(3)]))
    p1 = await _accepted_rotation(chain, both, 1)  # type: ignore[arg-type]
    gen = Generation.create()
    rekey = _rekey(chain, both.first, p1, gen, extra={joiner.id: joiner})
    await both.apply(*chain.block([rekey]))
    assert own.secrets is None
    # the endorsement's ring was sealed before the new generation existed
    _, out = await both.apply(*chain.block([_endorse(chain, chain.nodes[0].key, joiner, chain.secrets)]))
    assert not out.invalid
    assert own.secrets is not None and own.secrets.by_id(gen.id) is not None
    assert own.secrets.by_id(chain.secrets.current.id) is not None
    # a share that does not open on one node does not make that node refuse what the others accept
    p2 = await _accepted_rotation(chain, both, 2)  # type: ignore[arg-type]
    gen2 = Generation.create()
    entry = _rekey(chain, both.first, p2, gen2, bad_share_for=joiner.id)
    _, out = await both.apply(*chain.block([entry]))
    assert not out.invalid and own.secrets.by_id(gen2.id) is None
