"""Block application on hand-built blocks: every entry ends executed or Invalid with a reason
(values outside the value domain, unexpected exceptions), a block applies all or nothing (a block
that needs secrets leaves no trace and gives the same root when applied again), and signature
verdicts are bound to the bytes they were computed over."""

from __future__ import annotations

import hashlib

import pytest
from machine_harness import LEDGER, Chain, bootstrap, new_machine

from conclavium.block import Entry, Kind
from conclavium.encoding import b64e, canonical_json
from conclavium.tx import make_body, sign
from services.executor.ledger_machine import LedgerMachine, NeedSecrets


def _raw_tx(chain: Chain, value_json: bytes, key: str = "poison") -> Entry:
    """A signed transaction whose value is given as raw JSON: the SDK would refuse to build it, a
    client that skips the SDK can still sign it."""
    header = canonical_json({"app": "kv", "ledger": LEDGER, "nonce": key, "sender": chain.user.key_id, "ts": chain.ts})
    op = b'{"key":"' + key.encode() + b'","map":"public:t","op":"put","value":' + value_json + b"}"
    body = header[:-1] + b',"ops":[' + op + b'],"v":1}'
    return Entry(Kind.TX, body, chain.user.sign(body))


async def _ready() -> tuple[Chain, LedgerMachine]:
    chain = Chain()
    m = new_machine(chain)
    await bootstrap(chain, m)
    return chain, m


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"100000000000000000000000", "int_out_of_range"),
        (b"9007199254740992", "int_out_of_range"),
        (b'{"a":' * 400 + b"1" + b"}" * 400, "too_deep"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b"[" * 65 + b"]" * 65, "too_deep"),
    ],
)
async def test_a_value_outside_the_domain_is_invalid_and_the_block_goes_on(value: bytes, reason: str) -> None:
    chain, m = await _ready()
    poison = _raw_tx(chain, value)
    after = chain.tx("after", 1)
    _, out = await m.apply(*chain.block([poison, after]))
    assert [(e, code) for e, code, _ in out.invalid] == [(hashlib.sha256(poison.data).digest(), reason)]
    assert m.tx_status(hashlib.sha256(poison.data).digest())["reason"] == reason
    assert m.tx_status(hashlib.sha256(after.data).digest())["status"] == "Pending"
    assert m.state.get("public:t", "poison") is None and m.state.get("public:t", "after")["value"] == 1


async def test_values_at_the_edges_of_the_domain_execute() -> None:
    chain, m = await _ready()
    edge = [
        _raw_tx(chain, b"9007199254740991", "max"),
        _raw_tx(chain, b"-9007199254740991", "min"),
        _raw_tx(chain, b"[" * 64 + b"]" * 64, "deep"),
        _raw_tx(chain, b'"\\ud83d\\ude00"', "pair"),
        _raw_tx(chain, b"1e308", "big-float"),
    ]
    _, out = await m.apply(*chain.block(edge))
    assert out.invalid == []
    assert m.state.get("public:t", "max")["value"] == 2**53 - 1


async def test_sealed_operations_are_checked_once_opened() -> None:
    chain, m = await _ready()
    gen = chain.secrets.current
    ops = [{"op": "put", "map": "private", "key": "k", "value": "v"}]
    body = make_body(LEDGER, chain.user.key_id, ops, chain.ts, tx_key=(gen.id, gen.tx_public))
    # seal an out-of-domain value by hand, the way a client that skips the SDK could
    from conclavium.crypto import sealing
    from conclavium.tx import parse_body, seal_context

    tx = parse_body(body)
    header = {"app": "kv", "ledger": LEDGER, "nonce": tx.nonce, "sender": tx.sender, "ts": tx.ts, "v": 1}
    plain = b'[{"key":"k","map":"private","op":"put","value":100000000000000000000000}]'
    box = sealing.seal(plain, gen.tx_public, seal_context(header))
    forged = canonical_json({**header, "sealed": {"key": gen.id, "ct": b64e(box)}})
    entry = Entry(Kind.TX, forged, chain.user.sign(forged))
    _, out = await m.apply(*chain.block([entry, chain.tx("after", 2)]))
    assert [(code, msg) for _, code, msg in out.invalid] == [
        ("int_out_of_range", "a sealed operation is invalid (int_out_of_range)")
    ]
    assert m.state.get("public:t", "after")["value"] == 2


async def test_an_unexpected_exception_makes_only_that_entry_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    chain, m = await _ready()
    boom = chain.tx("boom", 1)
    real = m._execute_tx

    def flaky(entry, pre, block):  # type: ignore[no-untyped-def]
        if entry.data == boom.data:
            m.state.begin()
            m.state.put("public:t", "half-written", 1)
            m.state.commit()
            raise TypeError(f"deterministic failure in {object()!r}")
        return real(entry, pre, block)

    monkeypatch.setattr(m, "_execute_tx", flaky)
    _, out = await m.apply(*chain.block([boom, chain.tx("fine", 2)]))
    ((_, code, message),) = out.invalid
    assert code == "internal_error" and message.startswith("TypeError: deterministic failure in <object object at 0x…>")
    assert m.state.get("public:t", "half-written") is None, "the failed entry's committed writes are undone"
    assert m.state.get("public:t", "fine")["value"] == 2


async def test_a_block_that_needs_secrets_changes_nothing_and_gives_the_same_root_later() -> None:
    chain, m = await _ready()
    twin = new_machine(chain)
    twin.restore(m.snapshot())
    gen = chain.secrets.current
    ops = [{"op": "put", "map": "private", "key": "p", "value": 1}]
    sealed = sign(chain.user, make_body(LEDGER, chain.user.key_id, ops, chain.ts, tx_key=(gen.id, gen.tx_public)))
    block = chain.block([chain.tx("before", 1), Entry(Kind.TX, sealed.body, sealed.signature), chain.tx("x", 2)])
    before = m.snapshot()
    secrets, m.secrets = m.secrets, None
    with pytest.raises(NeedSecrets):
        await m.apply(*block)
    assert m.snapshot() == before and m.state.get("public:t", "before") is None
    m.secrets = secrets
    await m.apply(*block)
    await twin.apply(*block)
    assert m.uncommitted[chain.height].root == twin.uncommitted[chain.height].root
    assert m.snapshot() == twin.snapshot()


async def test_a_block_failing_after_its_first_entries_leaves_no_trace() -> None:
    """NeedSecrets raised by an entry in the middle of a block (the private write digest needs a
    generation this node lacks) rolls back the entries before it too."""
    chain, m = await _ready()
    twin = new_machine(chain)
    twin.restore(m.snapshot())
    gen = chain.secrets.current
    ops = [{"op": "put", "map": "private", "key": "p", "value": 1}]
    sealed = sign(chain.user, make_body(LEDGER, chain.user.key_id, ops, chain.ts, tx_key=(gen.id, gen.tx_public)))
    first = chain.tx("first", 1)
    block = chain.block([first, first, Entry(Kind.TX, sealed.body, sealed.signature)])
    before = m.snapshot()
    real = m._private_digest

    def missing(writes):  # type: ignore[no-untyped-def]
        raise NeedSecrets(gen.id)

    m._private_digest = missing  # type: ignore[method-assign]
    with pytest.raises(NeedSecrets):
        await m.apply(*block)
    assert m.snapshot() == before
    m._private_digest = real  # type: ignore[method-assign]
    await m.apply(*block)
    await twin.apply(*block)
    assert len(m.uncommitted[chain.height].leaves) == 2
    assert m.snapshot() == twin.snapshot()


async def test_a_signature_verdict_is_never_reused_for_other_bytes() -> None:
    """A block [(D' as X, X's signature over D), (D, that signature)]: D' is a forgery, whether
    the block was pre-verified with others or alone."""
    chain, m = await _ready()
    twin = new_machine(chain)
    twin.restore(m.snapshot())
    genuine = chain.tx("amount", 100)
    forged_body = genuine.data.replace(b'"value":100', b'"value":999')
    forged = Entry(Kind.TX, forged_body, genuine.signature)
    raw, seq = chain.block([forged, genuine])
    await m.preverify_blocks([raw])  # batched ahead, the way the executor's pipeline does
    _, out = await m.apply(raw, seq)
    _, out_twin = await twin.apply(raw, seq)  # verified in order, no batch ahead
    for o in (out, out_twin):
        assert [(e, code) for e, code, _ in o.invalid] == [(hashlib.sha256(forged_body).digest(), "bad_signature")]
    assert m.state.get("public:t", "amount")["value"] == 100
    assert m.snapshot() == twin.snapshot()


async def test_a_timestamp_outside_the_domain_stops_neither_the_pipeline_nor_the_block() -> None:
    """The header of a sealed body is hashed into its sealing context as canonical JSON: an
    integer beyond what that encodes once made opening ahead raise out of the pipeline."""
    from services.executor.sealed_openers import SealedOpenerPool

    chain, m = await _ready()
    m.openers = SealedOpenerPool(1)
    try:
        gen = chain.secrets.current
        ops = [{"op": "put", "map": "private", "key": "k", "value": 1}]
        body = make_body(LEDGER, chain.user.key_id, ops, chain.ts, tx_key=(gen.id, gen.tx_public))
        bad = body.replace(f'"ts":{chain.ts}'.encode(), b'"ts":100000000000000000000000')
        raw, seq = chain.block([Entry(Kind.TX, bad, chain.user.sign(bad)), chain.tx("after", 1)])
        await m.preverify_blocks([raw])
        _, out = await m.apply(raw, seq)
        assert [code for _, code, _ in out.invalid] == ["int_out_of_range"]
        assert m.state.get("public:t", "after")["value"] == 1
    finally:
        m.openers.close()
