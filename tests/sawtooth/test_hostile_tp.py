"""A TP that misbehaves, against the real `TpRouter` and ledger machine: garbage, silence,
InternalError, reads and writes outside the transaction's declared addresses or context, frames
that are not Sawtooth messages. Every batch still ends executed or Invalid with a reason, and two
executors whose TPs answer differently compute different roots (the commit rule's fork), never a
silent split. The hostile TP is a raw ZeroMQ DEALER speaking our own protobufs.

Time budget: about 35 s on the shared machine (the silent TP waits out three 0.5 s timeouts).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import zmq
from machine_harness import LEDGER, Chain, bootstrap
from sawtooth_support import INTKEY, address, batch, enable_sawtooth, entry, intkey_txn
from sawtooth_support import wait_registered as registered

from conclavium.sawtooth.pb.sawtooth_pb2 import (
    Message,
    TpProcessRequest,
    TpProcessResponse,
    TpRegisterRequest,
    TpStateEntry,
    TpStateGetRequest,
    TpStateGetResponse,
    TpStateSetRequest,
    TpStateSetResponse,
)
from services.executor.apps import default_apps
from services.executor.apps.sawtooth import STATE
from services.executor.ledger_machine import LedgerMachine
from services.executor.sawtooth_tp import TpRouter
from services.executor.verifier import BatchVerifier

KEY = bytes.fromhex("55" * 32)
M = Message.MessageType
Behaviour = Callable[["Tp", Message, TpProcessRequest], None]


class Tp:
    """A DEALER registered for intkey 1.0 that answers process requests with `behaviour`."""

    def __init__(self, endpoint: str, behaviour: Behaviour) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.behaviour = behaviour
        self.seen: list[object] = []
        self.stop = threading.Event()
        self.n = 0
        self.sock.send(b"not a sawtooth message")  # ignored by the router
        reg = TpRegisterRequest(family="intkey", version="1.0", protocol_version=1)
        self.send(M.TP_REGISTER_REQUEST, reg.SerializeToString(), "reg")
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def send(self, t: int, content: bytes, corr: str | None = None) -> str:
        self.n += 1
        corr = corr or f"c{self.n}"
        self.sock.send(Message(message_type=t, correlation_id=corr, content=content).SerializeToString())
        return corr

    def ask(self, t: int, content: bytes) -> Message:
        corr = self.send(t, content)
        while True:
            msg = Message.FromString(self.sock.recv())
            if msg.correlation_id == corr:
                return msg

    def reply(self, req: Message, status: int, message: str = "") -> None:
        out = TpProcessResponse(status=status, message=message).SerializeToString()
        self.sock.send(
            Message(
                message_type=M.TP_PROCESS_RESPONSE, correlation_id=req.correlation_id, content=out
            ).SerializeToString()
        )

    def run(self) -> None:
        while not self.stop.is_set():
            if not self.sock.poll(100):
                continue
            msg = Message.FromString(self.sock.recv())
            if msg.message_type == M.TP_PROCESS_REQUEST:
                self.behaviour(self, msg, TpProcessRequest.FromString(msg.content))

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close(0)


@contextmanager
def hostile(router: TpRouter, behaviour: Behaviour) -> Iterator[Tp]:
    tp = Tp(router.endpoint, behaviour)
    try:
        registered(router, timeout=10)
        yield tp
    finally:
        tp.close()


@pytest.fixture
def router():
    r = TpRouter("tcp://127.0.0.1:*")
    yield r
    r.close()


async def ledger(router: TpRouter) -> tuple[Chain, LedgerMachine]:
    chain = Chain()
    m = LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=default_apps(router))
    await bootstrap(chain, m, config={"sawtooth_tp_timeout_ms": 500, "sawtooth_tp_attempts": 3})
    await m.apply(*chain.block(enable_sawtooth(chain.member, LEDGER, chain.ts // 1000, INTKEY)))
    return chain, m


async def outcome(chain: Chain, m: LedgerMachine, name: str = "n") -> tuple[str, dict] | None:
    _, out = await m.apply(*chain.block([entry(batch(KEY, intkey_txn("set", name, 1)))]))
    if not out.invalid:
        return None
    ((_, code, message),) = out.invalid
    return code, json.loads(message)


@pytest.mark.parametrize(
    ("name", "behaviour", "words"),
    [
        (
            "garbage",
            lambda tp, msg, req: tp.send(M.TP_PROCESS_RESPONSE, b"\xff\xff\xff", msg.correlation_id),
            "decoded",
        ),
        (
            "internal",
            lambda tp, msg, req: tp.reply(msg, TpProcessResponse.INTERNAL_ERROR, "disk on fire"),
            "disk on fire",
        ),
        ("silent", lambda tp, msg, req: None, "did not answer in time"),
    ],
)
async def test_a_tp_that_never_answers_ok_ends_the_batch_invalid(
    router: TpRouter, name: str, behaviour, words: str
) -> None:
    chain, m = await ledger(router)
    with hostile(router, behaviour):
        result = await outcome(chain, m)
    assert result is not None
    code, detail = result
    assert code == "tp_internal_error" and words in detail["message"] and "3 attempts" in detail["message"]
    assert list(m.state.items(STATE)) == []


async def test_reads_and_writes_outside_the_declared_addresses_or_context_are_refused(router: TpRouter) -> None:
    answers: dict[str, int] = {}
    elsewhere = address("not-declared")

    def snoop(tp: Tp, msg: Message, req: TpProcessRequest) -> None:
        own = req.header.inputs[0]
        get = tp.ask(
            M.TP_STATE_GET_REQUEST,
            TpStateGetRequest(context_id=req.context_id, addresses=[elsewhere]).SerializeToString(),
        )
        answers["get_elsewhere"] = TpStateGetResponse.FromString(get.content).status
        other = TpStateGetRequest(context_id="0" * 32, addresses=[own]).SerializeToString()
        answers["get_other_context"] = TpStateGetResponse.FromString(
            tp.ask(M.TP_STATE_GET_REQUEST, other).content
        ).status
        prefix = TpStateGetRequest(context_id=req.context_id, addresses=[own[:6]]).SerializeToString()
        answers["get_prefix"] = TpStateGetResponse.FromString(tp.ask(M.TP_STATE_GET_REQUEST, prefix).content).status
        put = TpStateSetRequest(context_id=req.context_id, entries=[TpStateEntry(address=elsewhere, data=b"x")])
        answers["set_elsewhere"] = TpStateSetResponse.FromString(
            tp.ask(M.TP_STATE_SET_REQUEST, put.SerializeToString()).content
        ).status
        mine = TpStateSetRequest(context_id=req.context_id, entries=[TpStateEntry(address=own, data=b"mine")])
        answers["set_own"] = TpStateSetResponse.FromString(
            tp.ask(M.TP_STATE_SET_REQUEST, mine.SerializeToString()).content
        ).status
        tp.reply(msg, TpProcessResponse.OK)

    chain, m = await ledger(router)
    with hostile(router, snoop):
        assert await outcome(chain, m, "own") is None
    denied = TpStateGetResponse.AUTHORIZATION_ERROR
    assert answers == {
        "get_elsewhere": denied,
        "get_other_context": denied,
        "get_prefix": denied,
        "set_elsewhere": TpStateSetResponse.AUTHORIZATION_ERROR,
        "set_own": TpStateSetResponse.OK,
    }
    assert [a for a, _ in m.state.items(STATE)] == [address("own")]


async def test_two_executors_whose_tps_disagree_compute_different_roots() -> None:
    def writer(value: bytes) -> Behaviour:
        def behaviour(tp: Tp, msg: Message, req: TpProcessRequest) -> None:
            put = TpStateSetRequest(
                context_id=req.context_id, entries=[TpStateEntry(address=req.header.outputs[0], data=value)]
            )
            tp.ask(M.TP_STATE_SET_REQUEST, put.SerializeToString())
            tp.reply(msg, TpProcessResponse.OK)

        return behaviour

    routers = [TpRouter("tcp://127.0.0.1:*"), TpRouter("tcp://127.0.0.1:*")]
    try:
        chain = Chain()
        machines = [
            LedgerMachine(LEDGER, BatchVerifier(1), secrets=chain.secrets, apps=default_apps(r)) for r in routers
        ]
        await bootstrap(chain, machines[0])
        machines[1].restore(machines[0].snapshot())
        setup = chain.block(enable_sawtooth(chain.member, LEDGER, chain.ts // 1000, INTKEY))
        for m in machines:
            await m.apply(*setup)
        block = chain.block([entry(batch(KEY, intkey_txn("set", "d", 1)))])
        with hostile(routers[0], writer(b"one")), hostile(routers[1], writer(b"two")):
            for m in machines:
                await m.apply(*block)
        a, b = (m.uncommitted[m.tip.height] for m in machines)
        assert a.height == b.height and a.root != b.root
    finally:
        for r in routers:
            r.close()
