"""Node messages in execution: genesis, join, endorsement, rekey and snapshot digests (recovery's
messages in `recovery_entries.py`).

`node_auth.py` decides who may send each message and binds it to what it answers; this module
executes an authenticated message against the block being staged, as a part of `LedgerMachine`
(a mixin: it reads the machine's state, secrets and keys through `self`).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from conclavium import consortium, governance, node_messages, rules
from conclavium.block import Block, Entry
from conclavium.chain import Tip
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.governance.actions import apply_actions, current_node_policy, record_identity, validate_action
from conclavium.identity import CertificateError, load_cert, verify_node_certificate, verify_tx_key
from conclavium.tx import TxError

from . import ledger_clock, node_auth
from .attest import EvidenceRefused, drifted_nodes, policy_document, verify_join_evidence
from .enclave import Generation, LedgerSecrets, NodeKeys
from .outcome import BlockOutcome
from .recovery_entries import RecoveryEntries
from .state import State, write_digest
from .tables import (
    CERTIFICATE,
    CONFIG,
    DEFAULT_TX_VALIDITY_MS,
    MEASUREMENTS,
    NODES,
    REKEY,
    SECRET_GENERATION,
    SERVICE,
    SNAPSHOT_DIGESTS,
    TX_KEYS,
)
from .views import TableViews

log = logging.getLogger("conclavium.executor")


class NodeEntries(RecoveryEntries, TableViews):
    """Execution of node messages (entries of kind NODE), mixed into `LedgerMachine`."""

    ledger: str
    state: State
    tip: Tip
    secrets: LedgerSecrets | None
    secrets_changed: bool
    _early_shares: dict[str, str]
    node_keys: NodeKeys | None
    block_time: int

    def _execute_node_message(self, entry: Entry, block: Block, out: BlockOutcome) -> bytes:
        try:
            msg = node_messages.decode(entry.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise TxError("invalid_node_message", f"node message does not decode: {e}") from None
        if msg.ledger != self.ledger:
            raise TxError("wrong_ledger", "node message is for another ledger")
        if isinstance(msg, node_messages.Genesis):
            key, bound = node_auth.self_signed(msg, entry)
            return self._genesis(msg, key, bound, block)
        if isinstance(msg, node_messages.RecoveryOpen):
            _, bound = node_auth.self_signed(msg, entry)
            return self._recovery_open(msg, bound)
        if isinstance(msg, node_messages.Recovered):
            return self._recovered(msg, entry, out)
        validity = self.config("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)
        if isinstance(msg, node_messages.Join):
            _, bound = node_auth.self_signed(msg, entry)
            node_auth.check_fresh(msg.ts, self.block_time, validity)
            return self._join(msg, bound, block)
        node_auth.trusted_sender(msg, entry, self.trusted_node_keys())
        if isinstance(msg, node_messages.Rekey):
            node_auth.check_rekey(msg, self.state.get(REKEY, "pending"), self.state.get(SERVICE, TX_KEYS) or [])
        node_auth.check_fresh(msg.ts, self.block_time, validity)
        if isinstance(msg, node_messages.Endorse):
            return self._endorse(msg, out)
        if isinstance(msg, node_messages.SnapshotDigest):
            return self._snapshot_digest(msg)
        if isinstance(msg, node_messages.RecoveryShares):
            return self._recovery_shares(msg)
        return self._rekey(msg)

    def attestation_drift(self) -> list[str]:
        """Trusted nodes whose recorded claims fail the current node policy (nothing is revoked)."""
        return drifted_nodes(self.state.items(NODES), self.node_policy())

    def node_policy(self) -> dict[str, Any]:
        """The policy document the next join is judged by: node policy plus allowed measurements."""
        return policy_document(current_node_policy(self.state), list(self.state.items(MEASUREMENTS)))

    def _check_evidence(
        self, node: node_messages.NodeInfo, bound: list[bytes], node_policy: dict[str, Any], at_ms: int
    ) -> dict[str, Any]:
        policy = policy_document(node_policy, list(self.state.items(MEASUREMENTS)))
        try:
            claims = verify_join_evidence(msgspec.to_builtins(node.evidence), bound, policy, at_ms)
        except EvidenceRefused as e:
            raise TxError("attestation_refused", str(e)) from None
        if claims.get("platform") != "virtual" and policy.get("environment") == "development":
            # A node on TEE hardware must not share secrets with a ledger whose policy admits
            # virtual or debug nodes: a development policy is for development hardware only.
            raise TxError(
                "attestation_refused",
                "development_policy: a development node policy admits only virtual evidence; "
                "a ledger with TEE nodes needs a production policy",
            )
        return claims

    def _node_fields(self, node: node_messages.NodeInfo, claims: dict[str, Any], cert: str | None) -> dict[str, Any]:
        return {
            "name": node.name,
            "signing_key": node.signing_key,
            "encryption_key": node.encryption_key,
            "evidence": msgspec.to_builtins(node.evidence),
            "claims": claims,
            "cert": cert,
        }

    def _governance_node(self, node: node_messages.NodeInfo, claims: dict[str, Any]) -> dict[str, Any]:
        host_data = claims.get("host_data") or None
        return {
            "node_id": node.id,
            "public_keys": {"signing": node.signing_key, "encryption": node.encryption_key},
            "platform": claims["platform"],
            "measurement": claims["measurement"],
            **({"host_data": host_data} if host_data else {}),
        }

    def _genesis(self, msg: node_messages.Genesis, key: PublicKey, bound: list[bytes], block: Block) -> bytes:
        if self.genesis_done:
            raise TxError("genesis_exists", "the ledger already has a genesis")
        cfg = msg.config
        node_policy = cfg.get("node_policy", {})
        try:
            service_config = _service_config(cfg)
        except (TypeError, ValueError):
            raise TxError("invalid_genesis", "tx_validity_ms must be an integer") from None
        if not ledger_clock.valid_tolerance(service_config["clock_tolerance_ms"], service_config["tx_validity_ms"]):
            raise TxError("invalid_genesis", "clock_tolerance_ms must be a positive integer below tx_validity_ms")
        version = cfg.get("rules_version", rules.LATEST)
        if type(version) is not int or not 1 <= version <= 1_000_000:
            raise TxError("invalid_genesis", "rules_version must be a positive integer")
        # No executor clock exists yet: the genesis node's signed timestamp is the first reference.
        at, _ = ledger_clock.block_time(0, block.ts_ms, msg.ts, service_config["clock_tolerance_ms"])
        try:
            service_cert = load_cert(msg.service_cert)
            endorsed = verify_node_certificate(msg.node_cert, service_cert)
        except CertificateError as e:
            raise TxError("bad_certificate", str(e)) from None
        if endorsed != key:
            raise TxError("bad_certificate", "node certificate is for another key")
        self.state.begin()
        try:
            ctx = governance.Context(block.height, at)
            allow = [validate_action({"name": "allow_measurement", "args": m}) for m in cfg.get("measurements", [])]
            apply_actions(self.state, allow, ctx)
            claims = self._check_evidence(msg.node, bound, node_policy, at)
            identity = self._genesis_identity(cfg, claims)
            governance.genesis(
                self.state,
                members=[_person(r, weight=True) for r in identity["identity"]["members"]],
                users=[_person(r, weight=False) for r in cfg.get("users", [])],
                constitution=cfg.get("constitution"),
                nodes=[self._governance_node(msg.node, claims)],
            )
            if cfg.get("recovery_threshold") is not None:
                threshold = {"name": "set_recovery_threshold", "args": {"threshold": cfg["recovery_threshold"]}}
                apply_actions(self.state, [validate_action(threshold)], ctx)
        except governance.GovernanceError as e:
            self.state.rollback()
            raise TxError("invalid_genesis", str(e)) from None
        except TxError:
            self.state.rollback()
            raise
        quorum = cfg.get("commit_quorum")
        if quorum is None:
            # unset: a majority of the nodes that can sign
            self.state.delete(SERVICE, governance.model.COMMIT_QUORUM_KEY)
        elif type(quorum) is int and 1 <= quorum <= 1000:
            # Until that many nodes can sign nothing commits, and readyz says why (views.quorum_problem).
            self.state.put(SERVICE, governance.model.COMMIT_QUORUM_KEY, quorum)
        else:
            self.state.rollback()
            raise TxError("invalid_genesis", f"commit_quorum must be an integer in [1, 1000], got {quorum!r}")
        record_identity(self.state, identity)
        row = self.state.get(NODES, msg.node.id)
        self.state.put(NODES, msg.node.id, {**row, **self._node_fields(msg.node, claims, msg.node_cert)})
        try:
            verify_tx_key(msg.tx_key, self.ledger, msg.service_cert)
        except CertificateError as e:
            self.state.rollback()
            raise TxError("bad_tx_key", str(e)) from None
        self.state.put(SERVICE, CERTIFICATE, msg.service_cert)
        self.state.put(SERVICE, CONFIG, service_config)
        self.state.put(SERVICE, rules.RULES_KEY, {"version": version})
        self.state.put(SERVICE, TX_KEYS, [{**msg.tx_key, "from_height": block.height, "from_ts": at}])
        self.state.put(SERVICE, SECRET_GENERATION, msg.tx_key["id"])
        ledger_clock.seed(self.state, msg.node.id, msg.ts)
        digest = write_digest(self.state.commit())
        self.block_time = at
        return digest

    def _genesis_identity(self, cfg: dict[str, Any], claims: dict[str, Any]) -> dict[str, Any]:
        """The consortium identity version 1: signed by a threshold of the founders over this
        genesis configuration. Only a development ledger on the virtual platform may start
        without one (its members then come unsigned from the configuration, and no receipt of it
        verifies against an identity the members did not sign)."""
        doc = cfg.get("consortium")
        if doc is None:
            if claims.get("platform") != "virtual":
                raise TxError(
                    "unsigned_genesis",
                    "a ledger on TEE hardware needs a genesis whose consortium identity the founders signed",
                )
            try:
                members = [
                    {"name": r["name"], "public_key": r["public_key"], "weight": int(r.get("weight", 1))}
                    | ({"encryption_key": r["encryption_key"]} if r.get("encryption_key") else {})
                    for r in cfg.get("members", [])
                ]
                return consortium.make_identity(self.ledger, members, genesis=consortium.genesis_digest(cfg))
            except (KeyError, TypeError, ValueError) as e:
                raise TxError("invalid_genesis", f"genesis members: {e}") from None
        try:
            ident = consortium.verify_genesis(doc, self.ledger)
        except consortium.IdentityError as e:
            code = "unsigned_genesis" if e.code == "insufficient_signatures" else "invalid_genesis"
            raise TxError(code, str(e)) from None
        if ident.body.get("genesis") != consortium.genesis_digest(cfg):
            raise TxError("invalid_genesis", "the founders signed another genesis configuration than this one")
        if "members" in cfg:
            try:
                named = {PublicKey.load(r["public_key"]).key_id for r in cfg["members"]}
            except (KeyError, TypeError, KeyError_):
                raise TxError("invalid_genesis", "a genesis member has no valid public_key") from None
            if named != set(ident.members):
                raise TxError("invalid_genesis", "the genesis members differ from the signed identity's")
        return {"identity": ident.body, "signatures": doc["signatures"]}

    def _join(self, msg: node_messages.Join, bound: list[bytes], block: Block) -> bytes:
        if not self.genesis_done:
            raise TxError("no_service", "the service has no genesis yet")
        row = self.state.get(NODES, msg.node.id)
        if row is not None:
            raise TxError("already_joined", f"node is already {row['status']}")
        claims = self._check_evidence(msg.node, bound, current_node_policy(self.state), self.block_time)
        self.state.begin()
        try:
            governance.record_node_join(
                self.state, self._governance_node(msg.node, claims), governance.Context(block.height, self.block_time)
            )
        except governance.GovernanceError as e:
            self.state.rollback()
            raise TxError("join_refused", str(e)) from None
        row = self.state.get(NODES, msg.node.id)
        self.state.put(NODES, msg.node.id, {**row, **self._node_fields(msg.node, claims, None)})
        return write_digest(self.state.commit())

    def _endorse(self, msg: node_messages.Endorse, out: BlockOutcome) -> bytes:
        row = self.state.get(NODES, msg.node)
        if row is None or row["status"] != "Trusted":
            raise TxError("not_trusted", "only a trusted node can be endorsed")
        if row.get("cert"):
            raise TxError("already_endorsed", "node is already endorsed")
        try:
            endorsed = verify_node_certificate(msg.cert, load_cert(self.state.get(SERVICE, CERTIFICATE)))
        except CertificateError as e:
            raise TxError("bad_certificate", str(e)) from None
        if endorsed.key_id != msg.node:
            raise TxError("bad_certificate", "certificate is for another node")
        self.state.begin()
        self.state.put(NODES, msg.node, {**row, "cert": msg.cert})
        out.endorsed.append((msg.node, msg.wrapped_secrets))
        if self.node_keys is not None and msg.node == self.node_keys.id and self.secrets is None:
            self._take_secrets(msg.wrapped_secrets)
        return write_digest(self.state.commit())

    def _take_secrets(self, wrapped: str) -> None:
        """This node's own ledger secrets, sealed to its encryption key in an endorsement."""
        assert self.node_keys is not None
        try:
            secrets = LedgerSecrets.open_endorsement(wrapped, self.ledger, self.node_keys)
        except (ValueError, KeyError, TypeError) as e:
            log.error("could not open the ledger secrets sent to this node: %s", e)
            return
        if not node_auth.secrets_match_certificate(secrets, self.service_certificate()):
            log.error("the ledger secrets sent to this node hold another service key than the certificate's")
            return
        self.receive_secrets(secrets)

    def receive_secrets(self, secrets: LedgerSecrets) -> None:
        """This node's ledger secrets, from its endorsement (executed, or found by `JoinScan`), plus
        the shares of generations that reached it before them."""
        self.secrets = secrets
        self.secrets_changed = True
        for generation, share in self._early_shares.items():
            self._take_share(generation, share)
        self._early_shares.clear()

    def _take_share(self, generation: str, share: str) -> None:
        """This node's share of a new generation. Whether it opens depends on this node's key, so it
        never decides the rekey's validity (that would make this node's root differ); a node that
        cannot open its share misses the generation and waits for it like a joining node. A share
        that arrives before this node's secrets (a rekey ordered before its endorsement, whose ring
        may predate the generation) is kept until they come."""
        assert self.node_keys is not None
        if self.secrets is None:
            self._early_shares[generation] = share
            return
        try:
            gen = Generation.open_share(share, self.ledger, generation, self.node_keys)
        except (ValueError, KeyError, TypeError) as e:
            log.error("this node's share of generation %s does not open: %s", generation[:16], e)
            return
        self.secrets.add(gen)
        self.secrets_changed = True

    def _rekey(self, msg: node_messages.Rekey) -> bytes:
        """Authenticated and bound to the waiting rotation by `node_auth` before this runs."""
        try:
            verify_tx_key(msg.tx_key, self.ledger, self.state.get(SERVICE, CERTIFICATE))
        except CertificateError as e:
            raise TxError("bad_tx_key", str(e)) from None
        if msg.tx_key["id"] != msg.generation:
            raise TxError("invalid_node_message", "the transaction key must belong to the new generation")
        missing = sorted(set(self.trusted_node_keys()) - set(msg.shares))
        if missing:
            raise TxError("incomplete_rekey", f"no share for trusted node(s) {', '.join(m[:16] for m in missing)}")
        if self.node_keys is not None and self.node_keys.id in msg.shares:
            self._take_share(msg.generation, msg.shares[self.node_keys.id])
        self.state.begin()
        keys = self.state.get(SERVICE, TX_KEYS) or []
        self.state.put(SERVICE, TX_KEYS, [*keys, {**msg.tx_key, "from_height": self.tip.height + 1, "from_ts": msg.ts}])
        self.state.put(SERVICE, SECRET_GENERATION, msg.generation)
        self.state.delete(REKEY, "pending")
        return write_digest(self.state.commit())

    def _snapshot_digest(self, msg: node_messages.SnapshotDigest) -> bytes:
        if not 0 < msg.height <= self.tip.height:
            raise TxError("invalid_node_message", "snapshot digest for a height not yet executed")
        key = f"{msg.height:012d}"
        row = self.state.get(SNAPSHOT_DIGESTS, key)
        if row is not None and row["digest"] != msg.digest:
            raise TxError(
                "snapshot_mismatch", f"node {msg.sender[:16]} snapshot at {msg.height} differs from the recorded digest"
            )
        nodes = sorted({*(row or {}).get("nodes", []), msg.sender})
        self.state.begin()
        self.state.put(SNAPSHOT_DIGESTS, key, {"digest": msg.digest, "nodes": nodes})
        return write_digest(self.state.commit())


def _person(row: dict[str, Any], weight: bool) -> dict[str, Any]:
    """A genesis member or user as governance records it (certificates are reduced to their key)."""
    try:
        pem = PublicKey.load(row["public_key"]).pem
    except (KeyError, KeyError_) as e:
        raise governance.GovernanceError(f"genesis identity {row.get('name')!r}: {e}") from None
    out = {"name": row["name"], "public_key": pem}
    if weight:
        out["weight"] = int(row.get("weight", 1))
        if row.get("encryption_key"):
            out["encryption_key"] = row["encryption_key"]
    return out


def _service_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "tx_validity_ms": int(cfg.get("tx_validity_ms", DEFAULT_TX_VALIDITY_MS)),
        "clock_tolerance_ms": cfg.get("clock_tolerance_ms", ledger_clock.DEFAULT_CLOCK_TOLERANCE_MS),
        "node_policy": cfg.get("node_policy", {}),
    }
