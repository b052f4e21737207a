"""Who may say what about the nodes: the one place node messages and commit signatures are
authenticated.

Every node message is an entry in the ordered chain, signed by a node key:

- `Genesis` and `Join` by the key they carry (their attestation evidence binds it);
- `Endorse`, `Rekey` and `SnapshotDigest` by a node that is trusted and endorsed in the state the
  message executes against;
- commit signatures by a trusted node, over the statement naming the block they vouch for, and
  clock signatures by a trusted node, over the clock they carry (`ledger_clock.py`).

A message counts once: its id stays in the replay window while its timestamp is valid, and a
message outside the validity window around the block time is refused. A `Rekey` must also name
the accepted rotate_ledger_secret proposal that is waiting for it and bring a generation the
ledger never had. A joining node, which cannot execute sealed history before it holds the ledger
secrets, takes them only through `JoinScan`: from an endorsement in the hash chain after its own
tip, signed by a node it trusts, in a block a commit quorum of those nodes signed (nodes of k
distinct members, `commit_rule.has_quorum`), whose service key is the one in the service
certificate.

The service key is shared by every trusted node and only vouches for secret handover and the
transaction key; what makes a node's signature count for commits and receipts is its member's
endorsement (`conclavium.consortium`), which no node's secrets can mint.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from conclavium import node_messages
from conclavium.block import ClockSig, CommitSig, Entry, Kind, clock_statement, sig_statement
from conclavium.chain import ChainError, Tip, next_block
from conclavium.consortium import quorum_met as has_quorum
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.identity import CertificateError, load_cert, verify_node_certificate
from conclavium.tx import TxError

from .enclave import LedgerSecrets, NodeKeys

log = logging.getLogger("conclavium.executor")

SignedBySender = (
    node_messages.Endorse | node_messages.Rekey | node_messages.SnapshotDigest | node_messages.RecoveryShares
)
SelfSigned = node_messages.Genesis | node_messages.Join | node_messages.RecoveryOpen


class Verifier(Protocol):
    def verify(self, signature: bytes, data: bytes) -> bool: ...


WHAT = {
    node_messages.Endorse: "endorsement",
    node_messages.Rekey: "rekey",
    node_messages.SnapshotDigest: "snapshot digest",
    node_messages.RecoveryShares: "recovery share set",
}


def self_signed(msg: SelfSigned, entry: Entry) -> tuple[PublicKey, list[bytes]]:
    """The key a genesis or join carries and the keys its evidence must bind, once the entry is
    signed by that key; TxError otherwise."""
    try:
        key = PublicKey.load(msg.node.signing_key)
        enc = bytes.fromhex(msg.node.encryption_key)
        bound = node_messages.bound_keys(key.spki, enc)
    except (KeyError_, ValueError) as e:
        raise TxError("invalid_node_message", f"node keys are malformed: {e}") from None
    if key.key_id != msg.node.id or not key.verify(entry.signature, entry.data):
        raise TxError("bad_signature", "node message is not signed by the key it carries")
    return key, bound


def trusted_sender(msg: SignedBySender, entry: Entry, trusted: dict[str, PublicKey]) -> PublicKey:
    """The key of the trusted node that signed `entry`; TxError unless `msg.sender` is trusted
    and endorsed and the signature verifies with its key."""
    key = trusted.get(msg.sender)
    if key is None or not key.verify(entry.signature, entry.data):
        raise TxError("bad_signature", f"{WHAT[type(msg)]} is not signed by a trusted node")
    return key


def check_fresh(ts: int, block_ms: int, validity_ms: int) -> None:
    """A node message is valid for the same window around the block time as a transaction, so its
    id is remembered (and a copy ignored) for as long as a copy could be accepted."""
    if ts < block_ms - validity_ms:
        raise TxError("expired", "node message timestamp is outside the validity window")
    if ts > block_ms + validity_ms:
        raise TxError("not_yet_valid", "node message timestamp is in the future")


def check_rekey(msg: node_messages.Rekey, pending: dict[str, Any] | None, tx_keys: list[dict[str, Any]]) -> None:
    """A rekey answers the rotation that is waiting, once, with a generation never seen before."""
    if pending is None:
        raise TxError("no_pending_rekey", "no accepted rotate_ledger_secret proposal is waiting")
    if msg.proposal != pending.get("proposal_id"):
        waiting = str(pending.get("proposal_id"))[:16]
        raise TxError("stale_rekey", f"rekey answers proposal {msg.proposal[:16]}, the waiting rotation is {waiting}")
    if msg.generation in {k.get("id") for k in tx_keys}:
        raise TxError("generation_reused", f"generation {msg.generation[:16]} is already in the ledger")


def commit_sig_ok(sig: CommitSig, trusted: Mapping[str, Verifier], ledger: str) -> bool:
    """A commit signature counts when a trusted node signed the statement it carries."""
    key = trusted.get(sig.node)
    return key is not None and key.verify(sig.signature, sig_statement(sig, ledger))


def clock_sig_ok(sig: ClockSig, trusted: Mapping[str, Verifier], ledger: str) -> bool:
    """A clock signature counts when a trusted node signed the clock it carries (ledger_clock.py
    decides which of them to try)."""
    key = trusted.get(sig.node)
    return key is not None and key.verify(sig.signature, clock_statement(ledger, sig.node, sig.clock_ms))


def secrets_match_certificate(secrets: LedgerSecrets, service_cert: str | None) -> bool:
    """The service key in wrapped secrets is the one the ledger's service certificate names."""
    if service_cert is None or secrets.service_cert != service_cert:
        return False
    try:
        certified = PublicKey.from_crypto(load_cert(service_cert).public_key())
    except (CertificateError, KeyError_, ValueError):
        return False
    return certified.spki == secrets.service_key.public_key.spki


def endorsement_for(
    msg: node_messages.Endorse, entry: Entry, keys: NodeKeys, trusted: dict[str, PublicKey], service_cert: str
) -> LedgerSecrets | None:
    """The secrets in an endorsement of this node, if a trusted node signed it, its certificate is
    the service's for this node's key, and its service key matches the certificate."""
    if msg.node != keys.id:
        return None
    try:
        trusted_sender(msg, entry, trusted)
        endorsed = verify_node_certificate(msg.cert, load_cert(service_cert))
    except (TxError, CertificateError) as e:
        log.warning("ignored an endorsement of this node: %s", e)
        return None
    if endorsed.spki != keys.signing.public_key.spki:
        log.warning("ignored an endorsement of this node: its certificate is for another key")
        return None
    try:
        secrets = LedgerSecrets.open_endorsement(msg.wrapped_secrets, msg.ledger, keys)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignored an endorsement of this node: the secrets do not open (%s)", e)
        return None
    if not secrets_match_certificate(secrets, service_cert):
        log.warning("ignored an endorsement of this node: its service key is not the certificate's")
        return None
    return secrets


@dataclass
class _Candidate:
    height: int
    hash: bytes
    secrets: LedgerSecrets
    signers: defaultdict[tuple[bytes, int, int | None], set[str]] = field(default_factory=lambda: defaultdict(set))


class JoinScan:
    """A joining node's look ahead for its secrets, before it can execute the blocks between.

    Fed the stream's blocks in order from the node's tip, it follows the hash chain with the same
    rule as execution (blocks that do not extend it are skipped, as executors skip them), and
    returns the secrets of the first valid endorsement of this node once a commit quorum of
    `signers` (`quorum` nodes of `k` distinct members) signed a statement naming its block's hash.
    Rekeys are not taken here: those after the endorsement carry a share for this node and execute
    in order; those before it are already in the ring the endorsement carries.
    """

    def __init__(
        self,
        ledger: str,
        tip: Tip,
        keys: NodeKeys,
        trusted: dict[str, PublicKey],
        quorum: int,
        service_cert: str,
        signers: dict[str, PublicKey],
        member_of: dict[str, str],
        k: int,
    ) -> None:
        self.ledger = ledger
        self.tip = Tip(tip.height, tip.hash, tip.seq, tip.ts_ms)
        self.keys = keys
        self.trusted = dict(trusted)
        self.signers = dict(signers)
        self.member_of: dict[str, str] | None = dict(member_of)
        self.k = k
        self.quorum = max(quorum, 1)
        self.service_cert = service_cert
        self.candidates: dict[int, _Candidate] = {}
        self.skipped = 0

    def feed(self, raw: bytes) -> LedgerSecrets | None:
        try:
            block, bhash = next_block(self.tip, raw, self.ledger)
        except ChainError:
            self.skipped += 1
            return None
        self.tip = Tip(block.height, bhash, 0, block.ts_ms)
        for s in block.sigs:
            cand = self.candidates.get(s.height)
            if cand is None or s.block_hash != cand.hash or not commit_sig_ok(s, self.signers, self.ledger):
                continue
            cand.signers[(s.root, s.quorum, s.ts_ms)].add(s.node)
        for e in block.entries:
            if e.kind == Kind.NODE and b'"recovered"' in e.data:
                self._recovered(e)
                continue
            if e.kind != Kind.NODE or b'"endorse"' not in e.data or block.height in self.candidates:
                continue
            try:
                msg = node_messages.decode(e.data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if isinstance(msg, node_messages.Endorse) and msg.ledger == self.ledger:
                secrets = endorsement_for(msg, e, self.keys, self.trusted, self.service_cert)
                if secrets is not None:
                    self.candidates[block.height] = _Candidate(block.height, bhash, secrets)
        for height in sorted(self.candidates):
            cand = self.candidates[height]
            if any(has_quorum(nodes, self.member_of, self.quorum, self.k) for nodes in cand.signers.values()):
                return cand.secrets
        return None

    def _recovered(self, e: Entry) -> None:
        """After a disaster recovery the lost nodes are retired and the recovered node alone is
        trusted (recovery_entries.py): follow it when its node certificate is signed by the service
        key, which only the reconstructed secrets hold, and the entry by the certified key. Its
        signature alone then hands a joiner its secrets (it signs once its member endorsed it);
        commits still need nodes of k members (docs/recovery.md, step 6)."""
        try:
            msg = node_messages.decode(e.data)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        if not isinstance(msg, node_messages.Recovered) or msg.ledger != self.ledger:
            return
        try:
            key = verify_node_certificate(msg.cert, load_cert(self.service_cert))
        except CertificateError:
            return
        if key.key_id != msg.sender or not key.verify(e.signature, e.data):
            return
        # Until the members' joiners count, the recovered node is the only one that can sign, and a
        # joiner of another member gets its secrets only from it: what k members must sign is the
        # commits and receipts after that, which the joiner's own signature is needed for.
        self.trusted = {msg.sender: key}
        self.signers = {msg.sender: key}
        self.member_of = None
        self.k = 1
        self.quorum = 1
        self.candidates.clear()
