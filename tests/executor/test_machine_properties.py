"""Properties of block application over random and mutated input (hypothesis).

Each example plans a few blocks mixing valid entries with mutated ones — values at and past the
value domain's limits (huge integers, deep nesting, lone surrogates, floats, NaN), wrong ledger or
sender, signatures reused from other entries, swapped bodies, truncated or garbage bytes, every
entry kind, node messages with malformed fields (`evidence.certs` as a list, ...), duplicates
within and across blocks, governance documents garbage or valid but refused — plus commit
signatures right and wrong, time jumps, and blocks that do not extend the chain. The blocks go to
several machines of the executor's deterministic core, and:

- nothing escapes `apply` but ChainError for a block that does not extend the chain, and
  NeedSecrets for a machine without the ledger secrets; neither changes anything, and the retry
  once the secrets are there gives the same result as a machine that had them;
- every entry ends executed, Invalid with a machine-readable reason, or ignored as a copy of one
  already executed; every executed transaction verifies under its sender's key;
- machines that verify signatures ahead (`preverify_blocks`) over different batch boundaries reach
  the same outcomes, roots and snapshots as one that verifies in order;
- a machine fed only the executed entries reaches the same state and roots: refused entries leave
  the state untouched;
- a fresh machine restored from the snapshot taken before any block and applying it reaches the
  same root and snapshot (a retried block is deterministic).

Time budget (marker `fuzz`, deselect with `-m "not fuzz"`): 300 examples, 30 s alone on one core
(about a minute on a busy host); CONCLAVIUM_FUZZ_SCALE=10 runs ten times as many.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import functools
import hashlib
import itertools
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from machine_harness import LEDGER, Chain, Node, bootstrap, new_machine

from conclavium import cose, node_messages
from conclavium.block import (
    ClockSig,
    CommitSig,
    Entry,
    Kind,
    clock_statement,
    decode_block,
    encode,
    entry_id,
    statement,
)
from conclavium.chain import ChainError
from conclavium.crypto import sealing
from conclavium.crypto.keys import PrivateKey, PublicKey
from conclavium.encoding import b64e, canonical_json
from conclavium.governance import documents
from conclavium.identity import node_certificate, sign_tx_key
from conclavium.tx import make_body, parse_body, seal_context
from services.executor.enclave import Generation
from services.executor.ledger_machine import MEMBERS, USERS, BlockOutcome, LedgerMachine, NeedSecrets

pytestmark = pytest.mark.fuzz
FUZZ_SCALE = int(os.environ.get("CONCLAVIUM_FUZZ_SCALE", "1"))

HOSTILE = "@@hostile@@"
CODE = re.compile(r"^[a-z][a-z0-9_]*$")
PUBLIC_MAPS = ("public:t", "public:u")
PRIVATE_MAPS = ("secret", "s2")
KEYS = ("a", "b", "c")


@dataclass
class World:
    """A bootstrapped ledger (three trusted nodes, a member, a user, service open), built once."""

    chain: Chain
    snapshot: bytes
    stranger: PrivateKey
    newcomer: Node
    signers: dict[str, PrivateKey]


@functools.cache
def world() -> World:
    chain = Chain()
    machine = new_machine(chain)
    asyncio.run(bootstrap(chain, machine))
    newcomer = Node()
    stranger = PrivateKey.generate()
    signers = {n.id: n.key for n in chain.nodes}
    signers[newcomer.id] = newcomer.key
    signers[stranger.key_id] = stranger
    return World(chain, machine.snapshot(), stranger, newcomer, signers)


def fresh(w: World, secrets: bool = True) -> LedgerMachine:
    m = new_machine(w.chain if secrets else None)
    m.restore(w.snapshot)
    return m


# --- values ------------------------------------------------------------------------------------

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=8
)
surrogates = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)
wild_leaf = (
    json_leaf
    | st.integers(2**62, 2**80)
    | st.integers(-(2**80), -(2**62))
    | st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 5e-324])
    | surrogates
    | st.text(max_size=3).map(lambda s: "\ud800" + s)
)
wild_values = st.recursive(
    wild_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6
)


def _nested(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"1" + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


hostile_json = st.one_of(
    st.sampled_from(
        [
            b"18446744073709551616",
            b"18446744073709551615",
            b"9223372036854775808",
            b"9223372036854775807",
            b"-9223372036854775809",
            b"-9223372036854775808",
            b"100000000000000000000000",
            b"-100000000000000000000000",
            b"1" + b"0" * 400,
            b"1e400",
            b"-1e400",
            b"NaN",
            b"Infinity",
            b"-0.0",
            b"0.1",
            b"5e-324",
            b"1.7976931348623157e308",
            b'"\\ud800"',
            b'"\\udc00x"',
            b'"a\\ud83d"',
            b'"\xed\xa0\x80"',
            b'"\xff\xfe"',
            b'"\\u0000"',
            b'{"a":1,"a":2}',
            b"[1,2,]",
            b"",
        ]
    ),
    st.integers(-(2**90), 2**90).map(lambda i: str(i).encode()),
    st.builds(
        _nested, st.sampled_from([10, 31, 32, 33, 64, 65, 100, 400, 1000, 1100, 5000]), st.sampled_from(["list", "obj"])
    ),
    st.integers(1000, 70_000).map(lambda n: b'"' + b"a" * n + b'"'),
    st.integers(100, 20_000).map(lambda n: b"[" + b",".join([b"0"] * n) + b"]"),
)


def with_hostile(obj: Any, raw: bytes) -> bytes:
    """Canonical JSON of `obj` with the string HOSTILE replaced by raw bytes."""
    return canonical_json(obj).replace(f'"{HOSTILE}"'.encode(), raw)


def loose_json(obj: Any) -> bytes:
    """JSON of anything Python's encoder takes: big integers, NaN, lone surrogates (escaped)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


# --- planning blocks ---------------------------------------------------------------------------


@dataclass
class Plan:
    w: World
    data: Any
    blocks: list[list[Entry]]
    ts: list[int]  # the timestamp each planned block will carry
    pool: list[Entry] = field(default_factory=list)
    proposals: list[str] = field(default_factory=list)
    rotation: Generation | None = None

    def draw(self, strategy: Any) -> Any:
        return self.data.draw(strategy)

    def put(self, b: int, entry: Entry, anywhere: bool = False) -> None:
        """Into block b at the end, or (anywhere) into any planned block at any position."""
        self.pool.append(entry)
        if anywhere:
            b = self.draw(st.integers(0, len(self.blocks) - 1))
            self.blocks[b].insert(self.draw(st.integers(0, len(self.blocks[b]))), entry)
        else:
            self.blocks[b].append(entry)

    def pick(self, kinds: tuple[int, ...] = Kind.ALL) -> Entry | None:
        choices = [e for e in self.pool if e.kind in kinds]
        return self.draw(st.sampled_from(choices)) if choices else None

    # participants

    def sender(self) -> PrivateKey:
        c = self.w.chain
        return self.draw(st.sampled_from([c.user, c.user, c.member]))

    def tx_ts(self, b: int) -> int:
        offset = self.draw(st.sampled_from([0, 0, 0, -5, 5, -119_000, 119_000, -121_000, 121_000, -(10**9), 10**9]))
        return self.ts[b] + offset

    def ops(self, private: bool) -> list[dict[str, Any]]:
        maps = PUBLIC_MAPS + PRIVATE_MAPS if private else PUBLIC_MAPS
        out = []
        for _ in range(self.draw(st.integers(1, 3))):
            m, k = self.draw(st.sampled_from(maps)), self.draw(st.sampled_from(KEYS))
            if self.draw(st.integers(0, 4)) == 0:
                out.append({"op": "delete", "map": m, "key": k})
            else:
                out.append({"op": "put", "map": m, "key": k, "value": self.draw(json_values.filter(_not_none))})
        return out

    def header(self, who: PrivateKey, b: int, ledger: str = LEDGER, sender: str | None = None) -> dict[str, Any]:
        nonce = self.draw(st.binary(min_size=4, max_size=4)).hex()
        return {
            "v": 1,
            "ledger": ledger,
            "sender": sender or who.key_id,
            "nonce": nonce,
            "ts": self.tx_ts(b),
            "app": "kv",
        }

    def tx(self, who: PrivateKey, b: int, private: bool = False, **kw: Any) -> Entry:
        h = self.header(who, b, **kw)
        gen = self.w.chain.secrets.current
        body = make_body(h["ledger"], h["sender"], self.ops(private), h["ts"], h["nonce"], (gen.id, gen.tx_public))
        return Entry(Kind.TX, body, who.sign(body))

    def hostile_tx(self, b: int) -> Entry:
        who = self.sender()
        h = self.header(who, b)
        raw = self.draw(hostile_json)
        where = self.draw(st.sampled_from(["value", "value", "nested", "key", "map", "ts", "nonce", "v", "op"]))
        op: dict[str, Any] = {"op": "put", "map": "public:t", "key": "a", "value": 1}
        if where == "value":
            op["value"] = HOSTILE
        elif where == "nested":
            op["value"] = {"x": [1, HOSTILE]}
        elif where in ("key", "map", "op"):
            op[where] = HOSTILE
        else:
            h[where] = HOSTILE
        if self.draw(st.booleans()):
            gen = self.w.chain.secrets.current
            op["map"] = "secret" if op["map"] == "public:t" else op["map"]
            box = sealing.seal(with_hostile([op], raw), gen.tx_public, seal_context(h))
            body = with_hostile({**h, "sealed": {"key": gen.id, "ct": b64e(box)}}, raw)
        else:
            body = with_hostile({**h, "ops": [op]}, raw)
        return Entry(Kind.TX, body, who.sign(body))

    # governance

    def proposal(self, b: int, key: PrivateKey | None = None) -> Entry:
        c, w = self.w.chain, self.w
        actions = self.draw(
            st.sampled_from(
                [
                    [{"name": "set_user", "args": {"name": "v", "public_key": w.stranger.public_key.pem}}],
                    [{"name": "remove_user", "args": {"user_id": c.user.key_id}}],
                    [{"name": "set_map_policy", "args": {"map": "public:t", "writers": [c.member.key_id]}}],
                    [{"name": "set_map_policy", "args": {"map": "secret", "readers": [c.user.key_id]}}],
                    [{"name": "set_commit_quorum", "args": {"quorum": 3}}],
                    [{"name": "set_commit_quorum", "args": {"quorum": 1}}],
                    [{"name": "rotate_ledger_secret", "args": {}}],
                    [{"name": "open_service", "args": {}}],
                    [{"name": "retire_node", "args": {"node_id": c.nodes[2].id}}],
                    [{"name": "trust_node", "args": {"node_id": w.newcomer.id}}],
                ]
            )
        )
        created = self.ts[b] // 1000 + self.draw(st.sampled_from([0, 0, 0, -4000, 4000]))
        doc = documents.make_proposal(
            actions, key or c.member, created, ledger=self.draw(st.sampled_from([LEDGER] * 5 + ["other"]))
        )
        self.proposals.append(hashlib.sha256(doc).hexdigest())
        return Entry(Kind.GOV, doc, b"")

    def ballot(self, b: int) -> Entry:
        c = self.w.chain
        pid = self.draw(st.sampled_from([*self.proposals, "0" * 64]))
        key = self.draw(st.sampled_from([c.member, c.member, c.user]))
        created = self.ts[b] // 1000
        if self.draw(st.integers(0, 3)) == 0:
            doc = documents.make_withdrawal(pid, key, created, ledger=LEDGER)
        else:
            doc = documents.make_ballot(pid, self.draw(st.booleans()), key, created, ledger=LEDGER)
        return Entry(Kind.GOV, doc, b"")

    def raw_gov(self, b: int) -> Entry:
        c = self.w.chain
        how = self.draw(st.sampled_from(["payload", "headers", "garbage", "flip", "truncate"]))
        headers: dict[Any, Any] = {
            cose.HDR_MSG_TYPE: "proposal",
            cose.HDR_CREATED_AT: self.ts[b] // 1000,
            cose.HDR_LEDGER: LEDGER,
        }
        if how == "payload":
            doc = cose.sign1(
                with_hostile(
                    {"actions": [{"name": "set_commit_quorum", "args": {"quorum": HOSTILE}}]}, self.draw(hostile_json)
                ),
                c.member,
                headers,
            )
        elif how == "headers":
            label = self.draw(
                st.sampled_from([cose.HDR_MSG_TYPE, cose.HDR_CREATED_AT, cose.HDR_PROPOSAL_ID, cose.HDR_LEDGER, 99])
            )
            headers[label] = self.draw(
                st.one_of(st.integers(-(2**64), 2**64), st.text(max_size=5), st.binary(max_size=5), st.none())
            )
            doc = cose.sign1(canonical_json({"actions": [{"name": "open_service", "args": {}}]}), c.member, headers)
        elif how == "garbage":
            doc = self.draw(st.binary(max_size=64))
        else:
            base = self.proposal(b).data
            if how == "flip":
                i = self.draw(st.integers(0, len(base) - 1))
                doc = base[:i] + bytes([base[i] ^ self.draw(st.integers(1, 255))]) + base[i + 1 :]
            else:
                doc = base[: self.draw(st.integers(0, len(base) - 1))]
        return Entry(Kind.GOV, doc, b"")

    # node messages

    def node_message(self, b: int) -> Entry:
        c, w = self.w.chain, self.w
        what = self.draw(st.sampled_from(["join", "join", "join", "endorse", "snapshot", "rekey", "genesis"]))
        n0 = c.nodes[0]
        signer = n0.key
        if what == "join":
            node = self.draw(st.sampled_from([w.newcomer, w.newcomer, c.nodes[1]]))
            msg: Any = node_messages.Join(v=1, ledger=LEDGER, ts=self.ts[b], node=node.info("new"))
            signer = node.key
        elif what == "endorse":
            cert = node_certificate(c.service_key, c.service_cert, w.newcomer.key.public_key, _cert_time(c))
            msg = node_messages.Endorse(
                v=1,
                ledger=LEDGER,
                ts=self.ts[b],
                sender=n0.id,
                node=w.newcomer.id,
                cert=cert,
                wrapped_secrets=b64e(b"unused"),
            )
        elif what == "snapshot":
            msg = node_messages.SnapshotDigest(
                v=1,
                ledger=LEDGER,
                ts=self.ts[b],
                sender=self.draw(st.sampled_from([n.id for n in c.nodes])),
                height=self.draw(st.integers(-1, c.height + 8)),
                digest=self.draw(st.sampled_from(["aa", "bb"])),
            )
            signer = w.signers[msg.sender]
        elif what == "rekey":
            gen = self.rotation = self.rotation or Generation.create()
            fields = {
                "v": 1,
                "ledger": LEDGER,
                "ts": self.ts[b],
                "sender": n0.id,
                "generation": gen.id,
                "tx_key": sign_tx_key(c.service_key, LEDGER, gen.id, gen.tx_public),
                "shares": {n.id: gen.seal_share(LEDGER, n.id, sealing.public_bytes(n.enc)) for n in c.nodes},
            }
            if "proposal" in node_messages.Rekey.__struct_fields__:  # the proposal it answers
                fields["proposal"] = self.draw(st.sampled_from([*self.proposals, "0" * 64]))
            msg = node_messages.Rekey(**fields)
        else:
            return c.genesis_entry()
        body = msgspec.to_builtins(msg)
        if self.draw(st.integers(0, 2)) == 0:
            return node_messages.make_entry(msg, signer)
        self.mutate(body, what)
        data = loose_json(body)
        return Entry(Kind.NODE, data, signer.sign(data))

    def mutate(self, body: dict[str, Any], what: str) -> None:
        """Change one field somewhere in a node message, with emphasis on join evidence."""
        if what == "join" and self.draw(st.integers(0, 2)):
            ev = body["node"]["evidence"]
            name = self.draw(st.sampled_from(["certs", "certs", "collateral", "platform", "evidence"]))
            ev[name] = self.draw(
                st.sampled_from([["AAAA"], [], "AAAA", 5, {"vcek": 5}, {"vcek": None}, {"vcek": "!!"}, None, {}])
                | st.sampled_from(["snp", "tdx", "sgx", "virtual", "other"])
                | st.binary(max_size=40).map(b64e)
                | wild_values
            )
            return
        cur = body
        while True:
            keys = sorted(cur, key=str)
            k = self.draw(st.sampled_from(keys))
            if isinstance(cur[k], dict) and cur[k] and self.draw(st.booleans()):
                cur = cur[k]
                continue
            if self.draw(st.integers(0, 4)) == 0:
                del cur[k]
            else:
                cur[k] = self.draw(wild_values)
            return


def _not_none(v: Any) -> bool:
    return v is not None


def _cert_time(c: Chain) -> dt.datetime:
    return dt.datetime.fromtimestamp(c.ts // 1000, dt.UTC)


def plan_blocks(w: World, data: Any, chain: Chain) -> tuple[Plan, list[int]]:
    """Entries for each planned block; returns the plan and the time jump before each block."""
    n = data.draw(st.integers(1, 5), label="blocks")
    jumps = [data.draw(st.sampled_from([0, 0, 0, 0, 60_000, 10 * 60_000])) for _ in range(n)]
    ts, t = [], chain.ts
    for j in jumps:
        t += j + 10
        ts.append(t)
    p = Plan(w, data, [[] for _ in range(n)], ts)
    c = w.chain
    for b in range(n):
        for _ in range(data.draw(st.integers(0, 7))):
            kind = data.draw(
                st.sampled_from(
                    [
                        "valid",
                        "valid",
                        "sealed",
                        "clear_private",
                        "hostile",
                        "hostile",
                        "wrong_ledger",
                        "wrong_sender",
                        "stranger",
                        "reuse_sig",
                        "swap",
                        "truncate",
                        "garbage",
                        "rekind",
                        "duplicate",
                        "proposal",
                        "ballot",
                        "user_proposal",
                        "raw_gov",
                        "node",
                        "node",
                    ]
                )
            )
            if kind == "valid":
                p.put(b, p.tx(p.sender(), b))
            elif kind == "sealed":
                p.put(b, p.tx(p.sender(), b, private=True))
            elif kind == "clear_private":
                h = p.header(c.user, b)
                body = make_body(LEDGER, h["sender"], p.ops(private=True), h["ts"], h["nonce"])
                p.put(b, Entry(Kind.TX, body, c.user.sign(body)))
            elif kind == "hostile":
                p.put(b, p.hostile_tx(b))
            elif kind == "wrong_ledger":
                p.put(b, p.tx(c.user, b, ledger=data.draw(st.sampled_from(["other", "", "unit "]))))
            elif kind == "wrong_sender":
                p.put(b, p.tx(c.user, b, sender=c.member.key_id))
            elif kind == "stranger":
                p.put(b, p.tx(w.stranger, b))
            elif kind == "reuse_sig":
                orig = p.pick((Kind.TX,))
                if orig is None:
                    continue
                try:
                    sender = parse_body(orig.data).sender
                except ValueError:
                    sender = c.user.key_id
                forged = p.tx(c.user, b, sender=sender)
                p.put(b, Entry(Kind.TX, forged.data, orig.signature), anywhere=True)
            elif kind == "swap":
                a, other = p.pick(), p.pick()
                if a is not None and other is not None:
                    p.put(b, Entry(a.kind, a.data, other.signature), anywhere=True)
            elif kind == "truncate":
                a = p.pick()
                if a is not None and a.data:
                    p.put(b, Entry(a.kind, a.data[: data.draw(st.integers(0, len(a.data) - 1))], a.signature))
            elif kind == "garbage":
                k = data.draw(st.sampled_from([*Kind.ALL, 3, -1, 255, 2**32]))
                p.put(b, Entry(k, data.draw(st.binary(max_size=120)), data.draw(st.binary(max_size=70))))
            elif kind == "rekind":
                a = p.pick()
                if a is not None:
                    k = data.draw(st.sampled_from([k for k in (*Kind.ALL, 3, -1) if k != a.kind]))
                    p.put(b, Entry(k, a.data, a.signature))
            elif kind == "duplicate":
                a = p.pick()
                if a is not None:
                    p.put(b, a, anywhere=True)
            elif kind == "proposal":
                p.put(b, p.proposal(b))
            elif kind == "ballot":
                p.put(b, p.ballot(b))
            elif kind == "user_proposal":
                p.put(b, p.proposal(b, key=c.user))
            elif kind == "raw_gov":
                p.put(b, p.raw_gov(b))
            else:
                p.put(b, p.node_message(b))
    return p, jumps


# --- applying ----------------------------------------------------------------------------------


@dataclass
class Step:
    raw: bytes
    seq: int
    extends: bool  # False: a block that must be refused by the chain rule


@dataclass
class Result:
    """What one machine made of one step."""

    error: str | None
    leaves: list[tuple[bytes, bytes]]
    invalid: list[tuple[bytes, str]]
    root: bytes | None
    fork: str | None

    @classmethod
    def of(cls, m: LedgerMachine, height: int, out: BlockOutcome) -> Result:
        rec = m.uncommitted.get(height)
        return cls(
            None,
            list(rec.leaves) if rec else [],
            [(e, c) for e, c, _ in out.invalid],
            rec.root if rec else None,
            out.fork,
        )


def snap(m: LedgerMachine) -> bytes:
    try:
        return m.snapshot()
    except Exception as e:
        raise AssertionError(f"snapshot() raised {type(e).__name__}: {e}") from None


async def apply_step(m: LedgerMachine, step: Step) -> Result:
    """Apply a step, turning anything but ChainError into a test failure."""
    before = snap(m)
    try:
        block, out = await m.apply(step.raw, step.seq)
    except ChainError as e:
        assert not step.extends, f"a block that extends the chain was refused: {e.reason} {e}"
        assert snap(m) == before, "a block refused by the chain rule changed the machine"
        return Result(e.reason, [], [], None, None)
    except NeedSecrets:
        raise
    except Exception as e:
        raise AssertionError(f"apply() raised {type(e).__name__}: {e}") from e
    assert step.extends, "a block that does not extend the chain was applied"
    return Result.of(m, block.height, out)


def garbage_block(data: Any, chain: Chain, last: bytes | None) -> bytes:
    """A block that does not extend the chain: undecodable, truncated, foreign, unlinked, replayed."""
    how = data.draw(st.sampled_from(["bytes", "truncated", "ledger", "prev", "height", "version", "replay"]))
    if how == "bytes":
        return data.draw(st.binary(max_size=80))
    if how == "replay" and last is not None:
        return last
    raw, _ = copy.copy(chain).block([])
    if how in ("truncated", "replay"):
        return raw[: data.draw(st.integers(0, len(raw) - 1))]
    block = decode_block(raw)
    change = {
        "ledger": {"ledger": "other"},
        "prev": {"prev": bytes(32) if block.prev != bytes(32) else b"\x01" * 32},
        "height": {"height": block.height + data.draw(st.sampled_from([1, 2, -1, 10**6]))},
        "version": {"v": block.v + 1},
    }[how]
    return encode(msgspec.structs.replace(block, **change))


def draw_sigs(data: Any, w: World, ref: LedgerMachine, chain: Chain) -> list[CommitSig]:
    """Commit signatures for the next block: right ones for blocks awaiting commit, wrong ones."""
    recs = list(ref.uncommitted.values())
    nodes = [n.key for n in w.chain.nodes]
    sigs: list[CommitSig] = []
    if recs and data.draw(st.integers(0, 2)) == 0:
        sigs += [_sign(k, r.height, r.hash, r.root, r.quorum, r.signed_time()) for r in recs for k in nodes]
    for _ in range(data.draw(st.integers(0, 3))):
        if recs and data.draw(st.booleans()):
            r = data.draw(st.sampled_from(recs))
            h, bh, root, q, ts = r.height, r.hash, r.root, r.quorum, r.signed_time()
        else:
            h, bh, root, q = data.draw(st.integers(0, chain.height + 2)), bytes(32), bytes(32), 2
            ts = data.draw(st.sampled_from([None, chain.ts]))
        key = data.draw(st.sampled_from([*nodes, w.stranger, w.newcomer.key]))
        fault = data.draw(
            st.sampled_from(["none", "none", "root", "hash", "quorum", "signature", "ledger", "time", "untimed"])
        )
        if fault == "root":
            root = bytes(32)
        elif fault == "hash":
            bh = bytes(32)
        elif fault == "quorum":
            q += 1
        elif fault == "time":
            ts = (ts or 0) + 1
        elif fault == "untimed":
            ts = None
        s = _sign(key, h, bh, root, q, ts, "other" if fault == "ledger" else LEDGER)
        if fault == "signature":
            s = msgspec.structs.replace(s, signature=bytes(len(s.signature)))
        sigs.append(s)
    return sigs


def draw_clocks(data: Any, w: World, chain: Chain) -> list[ClockSig] | None:
    """The nodes' clock signatures for the next block: honest (None), or some right and wrong."""
    if data.draw(st.integers(0, 2)):
        return None
    out = []
    for _ in range(data.draw(st.integers(0, 4))):
        key = data.draw(st.sampled_from([*(n.key for n in w.chain.nodes), w.stranger]))
        at = chain.ts + 10 + data.draw(st.sampled_from([0, -60_000, 60_000, 10**11, -(10**11)]))
        at = data.draw(st.sampled_from([at, at, 0, -1, 2**63 - 1]))
        fault = data.draw(st.sampled_from(["none", "none", "signature", "ledger"]))
        sig = key.sign(clock_statement("other" if fault == "ledger" else LEDGER, key.key_id, at))
        out.append(ClockSig(key.key_id, at, bytes(len(sig)) if fault == "signature" else sig))
    return out


def _sign(key: PrivateKey, h: int, bh: bytes, root: bytes, q: int, ts: int | None, ledger: str = LEDGER) -> CommitSig:
    return CommitSig(key.key_id, h, bh, root, q, key.sign(statement(ledger, h, bh, root, q, ts)), ts)


def account(recent: set[bytes], entries: list[Entry], res: Result) -> list[int]:
    """Check every entry ended executed, Invalid with a reason, or ignored as a copy of one
    executed before (`recent`: the replay window before the block, some of which the block's
    time may have let go); returns the positions of the executed entries."""
    leaves = [e for e, _ in res.leaves]
    assert len(set(leaves)) == len(leaves), "an entry executed twice in one block"
    invalid_left = Counter(e for e, _ in res.invalid)
    for _, code in res.invalid:
        assert CODE.match(code), f"invalid reason {code!r} is not machine-readable"
    executed: list[int] = []
    done: set[bytes] = set()
    for i, e in enumerate(entries):
        eid = entry_id(e)
        if eid in done:
            continue
        if invalid_left[eid]:
            invalid_left[eid] -= 1
        elif eid in leaves:
            executed.append(i)
            done.add(eid)
        else:
            assert eid in recent, "an entry neither executed, Invalid nor a copy of an executed one"
    assert [entry_id(entries[i]) for i in executed] == leaves, "entries neither executed, Invalid nor copies"
    assert not +invalid_left, "Invalid entries that are not in the block"
    return executed


def check_executed_signatures(m: LedgerMachine, entries: list[Entry], executed: list[int]) -> None:
    """The oracle for forgery: every executed transaction verifies under its sender's key."""
    for i in executed:
        e = entries[i]
        if e.kind != Kind.TX:
            continue
        sender = parse_body(e.data).sender
        row = m.state.get(MEMBERS, sender) or m.state.get(USERS, sender)
        assert row is not None, "a transaction executed for a sender that is not a participant"
        assert PublicKey.load(row["public_key"]).verify(e.signature, e.data), "a forged transaction executed"


def translate(sigs: list[CommitSig], w: World, ref: dict[int, bytes], mine: dict[int, bytes]) -> list[CommitSig]:
    """The same commit signatures for a machine whose blocks have other hashes: a signature that
    named the reference block names this machine's block instead; validity is kept."""
    out = []
    for s in sigs:
        key = w.signers.get(s.node)
        if key is None or s.height not in ref or s.block_hash != ref[s.height]:
            out.append(s)
            continue
        stmt = statement(LEDGER, s.height, s.block_hash, s.root, s.quorum, s.ts_ms)
        valid = key.public_key.verify(s.signature, stmt)
        bh = mine.get(s.height, s.block_hash)
        new = _sign(key, s.height, bh, s.root, s.quorum, s.ts_ms)
        out.append(new if valid else msgspec.structs.replace(new, signature=s.signature))
    return out


async def run_example(w: World, data: Any) -> None:
    chain = copy.copy(w.chain)
    plan, jumps = plan_blocks(w, data, chain)

    # The reference machine applies the blocks as they are built (commit signatures follow it).
    ref = fresh(w)
    steps: list[Step] = []
    results: list[Result] = []
    before: list[bytes] = []
    block_sigs: list[list[CommitSig]] = []
    recents: list[set[bytes]] = []
    hashes: dict[int, bytes] = {}
    last: bytes | None = None
    for b, entries in enumerate(plan.blocks):
        if data.draw(st.integers(0, 4)) == 0:
            chain.seq += 1
            steps.append(Step(garbage_block(data, chain, last), chain.seq, False))
            before.append(snap(ref))
            results.append(await apply_step(ref, steps[-1]))
            block_sigs.append([])
            recents.append(set())
        chain.ts += jumps[b]
        sigs = draw_sigs(data, w, ref, chain)
        raw, seq = chain.block(entries, sigs, draw_clocks(data, w, chain))
        assert chain.ts == plan.ts[b]
        last = raw
        steps.append(Step(raw, seq, True))
        before.append(snap(ref))
        recents.append(set(ref.window.recent))
        block_sigs.append(sigs)
        results.append(await apply_step(ref, steps[-1]))
        hashes[chain.height] = hashlib.sha256(raw).digest()
    final = snap(ref)

    # Every entry is accounted for; nothing forged executed.
    executed: list[list[int]] = []
    for step, res, recent in zip(steps, results, recents, strict=True):
        if not step.extends:
            executed.append([])
            continue
        entries = decode_block(step.raw).entries
        executed.append(account(recent, entries, res))
        check_executed_signatures(ref, entries, executed[-1])

    # Other batch boundaries for verification ahead give the same outcomes and snapshots.
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(steps) - 1)), max_size=3))))
    for batches in ([steps], [[s] for s in steps], _split(steps, cuts)):
        m = fresh(w)
        got = []
        for batch in batches:
            await m.preverify_blocks([s.raw for s in batch])
            for s in batch:
                got.append(await apply_step(m, s))
        assert got == results, "verification ahead over other batch boundaries changed the outcome"
        assert snap(m) == final

    # Retry determinism: a fresh machine restored from the snapshot before each block.
    for i, step in enumerate(steps):
        m = new_machine(w.chain)
        m.restore(before[i])
        assert await apply_step(m, step) == results[i], "a block applied after a restore gave another result"
        nxt = before[i + 1] if i + 1 < len(steps) else final
        assert snap(m) == nxt, "a block applied after a restore gave another snapshot"

    # Without the ledger secrets: NeedSecrets changes nothing, and the retry with them agrees.
    m = fresh(w, secrets=False)
    for i, step in enumerate(steps):
        try:
            got = await apply_step(m, step)
        except NeedSecrets:
            assert snap(m) == before[i], "NeedSecrets after a change"
            m.secrets = w.chain.secrets
            got = await apply_step(m, step)
        assert got == results[i], "a machine without the secrets gave another result"

    # Fed only the executed entries, a machine reaches the same state and roots.
    m = fresh(w)
    mine: dict[int, bytes] = {}
    acc = copy.copy(w.chain)
    for step, res, idx, sigs in zip(steps, results, executed, block_sigs, strict=True):
        if not step.extends:
            continue
        block = decode_block(step.raw)
        acc.ts = block.ts_ms - 10
        raw, seq = acc.block([block.entries[i] for i in idx], translate(sigs, w, hashes, mine), block.clocks)
        mine[acc.height] = hashlib.sha256(raw).digest()
        got = await apply_step(m, Step(raw, seq, True))
        assert got.leaves == res.leaves and got.root == res.root, "refused entries changed what others execute"
        assert not got.invalid, "an entry executed in the full block is refused without its neighbours"
    assert m.state.maps == ref.state.maps, "refused entries changed the state"
    assert set(m.window.recent) == set(ref.window.recent) and m.committed_height == ref.committed_height
    assert (m.fork_reason is None) == (ref.fork_reason is None)


def _split(steps: list[Step], cuts: list[int]) -> list[list[Step]]:
    edges = [0, *cuts, len(steps)]
    return [steps[a:b] for a, b in itertools.pairwise(edges) if steps[a:b]]


@settings(
    max_examples=300 * FUZZ_SCALE,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
@given(st.data())
def test_block_application_properties(data: Any) -> None:
    w = world()
    asyncio.run(run_example(w, data))
