"""The validator's side of Sawtooth's transaction processor protocol: a ZeroMQ ROUTER that this
executor's TPs (unmodified Sawtooth SDK processors) connect to with their DEALER sockets.

Every frame is a `validator_pb2.Message`. A TP registers for a family and version
(`TP_REGISTER_REQUEST`); the executor hands it one transaction at a time (`TP_PROCESS_REQUEST` with
a fresh context id) and answers its state requests for that context through a `TxnContext` until
the TP's `TP_PROCESS_RESPONSE`. Requests for any other context are refused (`AUTHORIZATION_ERROR`),
so a TP cannot act outside the transaction it was given.

One I/O thread owns the ROUTER socket (ZeroMQ sockets are not thread safe): it answers registration
and pings by itself, and passes everything else to the executing thread, which is the only one
touching the ledger state. With `ROUTER_MANDATORY`, a send to a TP that went away fails, so a
vanished TP is noticed (its registration dropped) rather than waited for.

`TpUnavailable` means this executor cannot run the transaction now (no TP for the family, or the
TP disappeared): that is a local fault, the block is applied again later, and nothing is decided
about the transaction. What a registered TP answers (OK, Invalid, internal errors, garbage, silence
past the timeout) is decided by the application (`apps/sawtooth.py`).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import zmq
from google.protobuf.message import DecodeError

from conclavium.sawtooth.pb.sawtooth_pb2 import (
    Event,
    Message,
    PingResponse,
    TpEventAddRequest,
    TpEventAddResponse,
    TpProcessRequest,
    TpProcessResponse,
    TpReceiptAddDataRequest,
    TpReceiptAddDataResponse,
    TpRegisterRequest,
    TpRegisterResponse,
    TpStateDeleteRequest,
    TpStateDeleteResponse,
    TpStateEntry,
    TpStateGetRequest,
    TpStateGetResponse,
    TpStateSetRequest,
    TpStateSetResponse,
    TpUnregisterResponse,
    TransactionHeader,
)

log = logging.getLogger("conclavium.executor.sawtooth")

M = Message.MessageType
GONE = "gone"  # a TP went away (the I/O thread could not send to it)
MAX_FRAME = 16 * 1024 * 1024  # larger frames from a TP are dropped (ZeroMQ enforces it: MAXMSGSIZE)


class TpUnavailable(Exception):
    """No TP can run this transaction on this executor now (a local fault, not the transaction's)."""


@dataclass
class TxnContext:
    """What the executing thread does with a TP's requests for one transaction. `get` returns the
    value at an address (None: absent); `set`/`delete` write; each returns False when the address is
    outside the transaction's declared inputs (gets) or outputs (sets and deletes)."""

    get: Callable[[str], bytes | None]
    set: Callable[[str, bytes], bool]
    delete: Callable[[str], bool]
    readable: Callable[[str], bool]
    receipt_data: list[bytes] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass(frozen=True)
class TpAnswer:
    status: int  # TpProcessResponse.Status, or -1 when the answer could not be decoded
    message: str
    extended_data: bytes


class TpRouter:
    """The ROUTER endpoint and the TPs registered on it."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.ctx = zmq.Context.instance()
        self._inbox: queue.Queue[tuple[bytes, Message | str]] = queue.Queue()
        self._lock = threading.Lock()
        self._families: dict[tuple[str, str], list[bytes]] = {}  # (family, version) -> identities
        self._next = 0
        self._cmd_addr = f"inproc://sawtooth-tp-{id(self)}"
        self._cmd = self.ctx.socket(zmq.PAIR)
        self._cmd.bind(self._cmd_addr)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Exception | None = None
        self.registered_changed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sawtooth-tp", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    # --- the I/O thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            sock = self.ctx.socket(zmq.ROUTER)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME)
            sock.setsockopt(zmq.LINGER, 0)
            sock.bind(self.endpoint)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
            cmd = self.ctx.socket(zmq.PAIR)
            cmd.connect(self._cmd_addr)
        except zmq.ZMQError as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(cmd, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                for s, _ in poller.poll(200):
                    frames = s.recv_multipart()
                    if len(frames) != 2:
                        continue  # a ROUTER frame is [identity, message]; anything else is noise
                    if s is cmd:
                        self._send(sock, frames[0], frames[1])
                    else:
                        self._received(sock, frames[0], frames[1])
        finally:
            sock.close(0)
            cmd.close(0)

    def _send(self, sock: zmq.Socket, ident: bytes, data: bytes) -> None:
        try:
            sock.send_multipart([ident, data])
        except zmq.ZMQError:  # EHOSTUNREACH: the TP is gone
            self._drop(ident)
            self._inbox.put((ident, GONE))

    def _drop(self, ident: bytes) -> None:
        with self._lock:
            for idents in self._families.values():
                if ident in idents:
                    idents.remove(ident)

    def _received(self, sock: zmq.Socket, ident: bytes, data: bytes) -> None:
        try:
            msg = Message.FromString(data)
        except (DecodeError, ValueError):
            return  # not a Sawtooth message: nothing to answer
        t = msg.message_type
        if t == M.TP_REGISTER_REQUEST:
            try:
                req = TpRegisterRequest.FromString(msg.content)
            except (DecodeError, ValueError):
                return
            with self._lock:
                idents = self._families.setdefault((req.family, req.version), [])
                if ident not in idents:
                    idents.append(ident)
            log.info("TP registered for %s %s", req.family[:64], req.version[:32])
            resp = TpRegisterResponse(status=TpRegisterResponse.OK, protocol_version=req.protocol_version)
            self._send(sock, ident, _msg(M.TP_REGISTER_RESPONSE, msg.correlation_id, resp.SerializeToString()))
            self.registered_changed.set()
        elif t == M.TP_UNREGISTER_REQUEST:
            self._drop(ident)
            resp_u = TpUnregisterResponse(status=TpUnregisterResponse.OK)
            self._send(sock, ident, _msg(M.TP_UNREGISTER_RESPONSE, msg.correlation_id, resp_u.SerializeToString()))
            self._inbox.put((ident, GONE))
        elif t == M.PING_REQUEST:
            self._send(sock, ident, _msg(M.PING_RESPONSE, msg.correlation_id, PingResponse().SerializeToString()))
        elif t == M.PING_RESPONSE:
            return
        else:
            self._inbox.put((ident, msg))

    # --- the executing thread ------------------------------------------------------------------

    def registered(self) -> dict[tuple[str, str], int]:
        """(family, version) -> how many TPs are registered for it."""
        with self._lock:
            return {k: len(v) for k, v in self._families.items() if v}

    def _pick(self, family: str, version: str) -> bytes | None:
        with self._lock:
            idents = self._families.get((family, version)) or []
            if not idents:
                return None
            self._next += 1
            return idents[self._next % len(idents)]

    def _out(self, ident: bytes, data: bytes) -> None:
        self._cmd.send_multipart([ident, data])

    def process(
        self, header_bytes: bytes, payload: bytes, signature: str, txn: TxnContext, timeout: float
    ) -> TpAnswer | None:
        """Run one transaction on a TP registered for its family; its answer, or None when the TP
        did not answer within `timeout` seconds. TpUnavailable when no TP can run it."""
        header = TransactionHeader.FromString(header_bytes)
        ident = self._pick(header.family_name, header.family_version)
        if ident is None:
            raise TpUnavailable(f"no TP registered for {header.family_name} {header.family_version}")
        context_id = os.urandom(16).hex()
        corr = os.urandom(16).hex()
        req = TpProcessRequest(
            header=header, header_bytes=header_bytes, payload=payload, signature=signature, context_id=context_id
        )
        self._drain_stale()
        self._out(ident, _msg(M.TP_PROCESS_REQUEST, corr, req.SerializeToString()))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                who, msg = self._inbox.get(timeout=min(left, 1.0))
            except queue.Empty:
                self._out(ident, _msg(M.PING_REQUEST, os.urandom(8).hex(), b""))  # fails if the TP is gone
                continue
            if msg == GONE:
                if who == ident:
                    raise TpUnavailable("the TP went away while running a transaction")
                continue
            assert isinstance(msg, Message)
            if who != ident:
                self._refuse(who, msg)
                continue
            if msg.message_type == M.TP_PROCESS_RESPONSE and msg.correlation_id == corr:
                try:
                    r = TpProcessResponse.FromString(msg.content)
                except (DecodeError, ValueError):
                    return TpAnswer(-1, "the TP's response could not be decoded", b"")
                return TpAnswer(r.status, r.message, r.extended_data)
            self._serve(ident, msg, context_id, txn)

    def _drain_stale(self) -> None:
        """Requests left over from an earlier transaction (a TP that timed out) are refused."""
        while True:
            try:
                who, msg = self._inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(msg, Message):
                self._refuse(who, msg)

    def _refuse(self, who: bytes, msg: Message) -> None:
        self._serve(who, msg, None, None)

    def _serve(self, ident: bytes, msg: Message, context_id: str | None, txn: TxnContext | None) -> None:
        """Answer one state, receipt or event request of the TP running the transaction."""
        t = msg.message_type
        try:
            if t == M.TP_STATE_GET_REQUEST:
                g = TpStateGetRequest.FromString(msg.content)
                if txn is None or g.context_id != context_id or not all(txn.readable(a) for a in g.addresses):
                    out = TpStateGetResponse(status=TpStateGetResponse.AUTHORIZATION_ERROR)
                else:
                    entries = []
                    for a in g.addresses:
                        v = txn.get(a)
                        entries.append(TpStateEntry(address=a, data=v or b""))
                    out = TpStateGetResponse(status=TpStateGetResponse.OK, entries=entries)
                reply = (M.TP_STATE_GET_RESPONSE, out.SerializeToString())
            elif t == M.TP_STATE_SET_REQUEST:
                s = TpStateSetRequest.FromString(msg.content)
                ok = txn is not None and s.context_id == context_id
                if ok and txn is not None:
                    ok = all(txn.set(e.address, e.data) for e in s.entries)
                st = TpStateSetResponse.OK if ok else TpStateSetResponse.AUTHORIZATION_ERROR
                addrs = [e.address for e in s.entries] if ok else []
                reply = (M.TP_STATE_SET_RESPONSE, TpStateSetResponse(status=st, addresses=addrs).SerializeToString())
            elif t == M.TP_STATE_DELETE_REQUEST:
                d = TpStateDeleteRequest.FromString(msg.content)
                ok = txn is not None and d.context_id == context_id
                if ok and txn is not None:
                    ok = all(txn.delete(a) for a in d.addresses)
                st = TpStateDeleteResponse.OK if ok else TpStateDeleteResponse.AUTHORIZATION_ERROR
                addrs = list(d.addresses) if ok else []
                out_d = TpStateDeleteResponse(status=st, addresses=addrs)
                reply = (M.TP_STATE_DELETE_RESPONSE, out_d.SerializeToString())
            elif t == M.TP_RECEIPT_ADD_DATA_REQUEST:
                r = TpReceiptAddDataRequest.FromString(msg.content)
                ok = txn is not None and r.context_id == context_id
                if ok and txn is not None:
                    txn.receipt_data.append(r.data)
                st = TpReceiptAddDataResponse.OK if ok else TpReceiptAddDataResponse.ERROR
                reply = (M.TP_RECEIPT_ADD_DATA_RESPONSE, TpReceiptAddDataResponse(status=st).SerializeToString())
            elif t == M.TP_EVENT_ADD_REQUEST:
                ev = TpEventAddRequest.FromString(msg.content)
                ok = txn is not None and ev.context_id == context_id
                if ok and txn is not None:
                    txn.events.append(ev.event)
                st = TpEventAddResponse.OK if ok else TpEventAddResponse.ERROR
                reply = (M.TP_EVENT_ADD_RESPONSE, TpEventAddResponse(status=st).SerializeToString())
            else:
                return  # a response to nothing, or a type this side does not take: ignored
        except (DecodeError, ValueError):
            return  # an undecodable request gets no answer; the TP times out on its own
        self._out(ident, _msg(reply[0], msg.correlation_id, reply[1]))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._cmd.close(0)


def _msg(message_type: int, correlation_id: str, content: bytes) -> bytes:
    return Message(message_type=message_type, correlation_id=correlation_id, content=content).SerializeToString()
