"""Raw Ethereum transactions: decoding, the signing hash, sender recovery and intrinsic gas.

Accepted forms (what `eth_sendRawTransaction` carries): legacy RLP, unprotected (v 27/28) or
EIP-155 (v = 35 + 2 * chain id + parity); EIP-2930 (`0x01 || rlp(...)`); EIP-1559
(`0x02 || rlp(...)`). Blob (0x03) and set-code (0x04) transactions are refused. The signature
inside the raw bytes is the transaction's only signature: whoever holds the bytes can recover the
sender, so the gateway may check it early and every executor checks it again in ledger order.
The signing hash is re-encoded from the received byte slices, never from re-serialised integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import coincurve
import rlp

from .chain import ChainConfig
from .hashing import keccak256

MAX_RAW_TX = 128 * 1024
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_INITCODE = 49_152  # EIP-3860
TX_GAS = 21_000
TX_CREATE_GAS = 32_000
ACCESS_ADDRESS_GAS = 2_400
ACCESS_KEY_GAS = 1_900
U256 = 2**256


class EthTxError(ValueError):
    """A raw transaction refused before execution; `message` is geth's wording where geth has one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class EthTx:
    type: int  # 0 legacy, 1 EIP-2930, 2 EIP-1559
    chain_id: int | None  # None: an unprotected legacy transaction
    nonce: int
    gas_price: int  # legacy and 2930; for 1559 the fee cap
    max_priority_fee: int  # legacy and 2930: the gas price
    gas: int
    to: bytes | None  # None: contract creation
    value: int
    data: bytes
    access_list: tuple[tuple[bytes, tuple[bytes, ...]], ...]
    v: int
    r: int
    s: int
    sender: bytes
    hash: bytes

    @property
    def max_fee(self) -> int:
        return self.gas_price

    def effective_gas_price(self, base_fee: int) -> int:
        if self.type == 2:
            return min(self.gas_price, base_fee + self.max_priority_fee)
        return self.gas_price


def _int(b: object, what: str, limit: int = U256) -> int:
    if not isinstance(b, bytes):
        raise EthTxError("invalid_tx", f"rlp: expected input string or byte for {what}")
    if b[:1] == b"\x00":
        raise EthTxError("invalid_tx", f"rlp: non-canonical integer (leading zero bytes) for {what}")
    n = int.from_bytes(b, "big")
    if n >= limit:
        raise EthTxError("invalid_tx", f"rlp: {what} out of range")
    return n


def _to(b: object) -> bytes | None:
    if not isinstance(b, bytes) or len(b) not in (0, 20):
        raise EthTxError("invalid_tx", "rlp: the recipient is not a 20-byte address")
    return b or None


def _access_list(items: object) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    if not isinstance(items, list):
        raise EthTxError("invalid_tx", "rlp: the access list is not a list")
    out = []
    for item in items:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], bytes)
            or len(item[0]) != 20
            or not isinstance(item[1], list)
            or not all(isinstance(k, bytes) and len(k) == 32 for k in item[1])
        ):
            raise EthTxError("invalid_tx", "rlp: an access list entry is not [address, [32-byte keys]]")
        out.append((item[0], tuple(item[1])))
    return tuple(out)


def _recover(signing_hash: bytes, parity: int, r: int, s: int) -> bytes:
    if not (0 < r < SECP256K1_N and 0 < s <= SECP256K1_N // 2) or parity not in (0, 1):
        raise EthTxError("invalid_signature", "invalid transaction v, r, s values")
    sig = r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([parity])
    try:
        public = coincurve.PublicKey.from_signature_and_message(sig, signing_hash, hasher=None)
    except Exception:
        raise EthTxError("invalid_signature", "invalid transaction v, r, s values") from None
    return keccak256(public.format(compressed=False)[1:])[12:]


def decode(raw: bytes, private_marker: bool = False) -> EthTx:
    """A raw transaction, its sender recovered; EthTxError names the first problem. With
    `private_marker`, a legacy v of 37/38 is GoQuorum's private marker: a homestead signature
    (v 27/28) plus 10, no chain id (docs/quorum.md)."""
    if not raw:
        raise EthTxError("invalid_tx", "typed transaction too short")
    if len(raw) > MAX_RAW_TX:
        raise EthTxError("oversized", "oversized data")
    first = raw[0]
    try:
        if first >= 0xC0:
            return _legacy(raw, rlp.decode(raw), private_marker)
        if first in (1, 2):
            return _typed(raw, first, rlp.decode(raw[1:]))
    except rlp.exceptions.DecodingError as e:
        raise EthTxError("invalid_tx", f"rlp: {str(e)[:120]}") from None
    raise EthTxError("unsupported_type", "transaction type not supported")


def _legacy(raw: bytes, f: object, private_marker: bool = False) -> EthTx:
    if not isinstance(f, list) or len(f) != 9:
        raise EthTxError("invalid_tx", "rlp: a legacy transaction has 9 fields")
    nonce, gp, gas = _int(f[0], "nonce", 2**64), _int(f[1], "gasPrice"), _int(f[2], "gas", 2**64)
    to, value = _to(f[3]), _int(f[4], "value")
    if not isinstance(f[5], bytes):
        raise EthTxError("invalid_tx", "rlp: data is not a byte string")
    v, r, s = _int(f[6], "v"), _int(f[7], "r"), _int(f[8], "s")
    if v in (27, 28) or (private_marker and v in (37, 38)):
        chain_id, parity = None, (v - 27) % 10
        signing = keccak256(rlp.encode(f[:6]))
    elif v >= 35:
        chain_id, parity = (v - 35) // 2, (v - 35) % 2
        signing = keccak256(rlp.encode([*f[:6], _be(chain_id), b"", b""]))
    else:
        raise EthTxError("invalid_signature", "invalid transaction v, r, s values")
    sender = _recover(signing, parity, r, s)
    return EthTx(0, chain_id, nonce, gp, gp, gas, to, value, f[5], (), v, r, s, sender, keccak256(raw))


def _typed(raw: bytes, kind: int, f: object) -> EthTx:
    n = 11 if kind == 1 else 12
    if not isinstance(f, list) or len(f) != n:
        raise EthTxError("invalid_tx", f"rlp: a type-{kind} transaction has {n} fields")
    chain_id, nonce = _int(f[0], "chainId", 2**64), _int(f[1], "nonce", 2**64)
    if kind == 1:
        fee_cap = tip = _int(f[2], "gasPrice")
        rest = f[3:]
    else:
        tip, fee_cap = _int(f[2], "maxPriorityFeePerGas"), _int(f[3], "maxFeePerGas")
        if tip > fee_cap:
            raise EthTxError("tip_above_fee_cap", "max priority fee per gas higher than max fee per gas")
        rest = f[4:]
    gas, to, value, data = _int(rest[0], "gas", 2**64), _to(rest[1]), _int(rest[2], "value"), rest[3]
    if not isinstance(data, bytes):
        raise EthTxError("invalid_tx", "rlp: data is not a byte string")
    access = _access_list(rest[4])
    parity, r, s = _int(rest[5], "yParity"), _int(rest[6], "r"), _int(rest[7], "s")
    signing = keccak256(bytes([kind]) + rlp.encode(f[: n - 3]))
    sender = _recover(signing, parity, r, s)
    return EthTx(
        kind, chain_id, nonce, fee_cap, tip, gas, to, value, data, access, parity, r, s, sender, keccak256(raw)
    )


def _be(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""


def intrinsic_gas(tx: EthTx) -> int:
    """Gas charged before execution (Shanghai/Cancun rules: EIP-2028 calldata, EIP-2930 access
    list, EIP-3860 initcode words)."""
    zeros = tx.data.count(0)
    gas = TX_GAS + 4 * zeros + 16 * (len(tx.data) - zeros)
    if tx.to is None:
        gas += TX_CREATE_GAS + 2 * ((len(tx.data) + 31) // 32)
    for _, keys in tx.access_list:
        gas += ACCESS_ADDRESS_GAS + ACCESS_KEY_GAS * len(keys)
    return gas


def check_static(tx: EthTx, chain: ChainConfig) -> None:
    """The checks that need no state: chain id, gas bounds, fee floor, initcode size. Geth's words."""
    if tx.chain_id is not None and tx.chain_id != chain.chain_id:
        raise EthTxError("wrong_chain", f"invalid chain id for signer: have {tx.chain_id} want {chain.chain_id}")
    if tx.chain_id is None and not chain.allow_unprotected:
        raise EthTxError("unprotected", "only replay-protected (EIP-155) transactions allowed over RPC")
    block_gas_limit = chain.block_gas_limit
    if tx.to is None and len(tx.data) > MAX_INITCODE:
        raise EthTxError(
            "initcode_too_large", f"max initcode size exceeded: code size {len(tx.data)} limit {MAX_INITCODE}"
        )
    if tx.gas > block_gas_limit:
        raise EthTxError("gas_limit", "exceeds block gas limit")
    need = intrinsic_gas(tx)
    if tx.gas < need:
        raise EthTxError("intrinsic_gas", f"intrinsic gas too low: have {tx.gas}, want {need}")
    if tx.max_fee < chain.base_fee:
        raise EthTxError(
            "fee_too_low",
            f"max fee per gas less than block base fee: maxFeePerGas: {tx.max_fee}, baseFee: {chain.base_fee}",
        )
