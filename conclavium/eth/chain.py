"""The chain configuration governance sets (`set_eth_chain`), and the ledger maps the Ethereum
application keeps its state in. All of them are public: Ethereum state and transactions are
visible to the untrusted parts (gateway, NATS, disks), as every `public:` map is.

Maps (values are JSON; 256-bit numbers as `0x` hex strings, addresses lowercase `0x` hex):
- accounts: address -> [nonce, balance, code hash or ""]
- code: code hash -> code (hex)
- storage: "address:slot" (slot as 64 hex digits) -> value (hex), absent when zero
- txs: transaction hash -> the transaction's outcome and position (`services/executor/apps/eth`)
- blocks: height -> {"n": Ethereum transactions in it, "gas": gas used}
- block_txs: "height:index" -> transaction hash
- senders: address -> {} for the accounts governance registered (`eth_register`)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

APP = "eth"  # the application name entries carry (`conclavium.apps`)
PREFIX = "public:sys.eth."  # under `public:sys.`: no key-value transaction may write here
ACCOUNTS = PREFIX + "accounts"
CODE = PREFIX + "code"
STORAGE = PREFIX + "storage"
TXS = PREFIX + "txs"
BLOCKS = PREFIX + "blocks"
BLOCK_TXS = PREFIX + "block_txs"
SENDERS = PREFIX + "senders"
CHAIN_KEY = "eth_chain"  # in `public:gov.service`
SENDER_POLICIES = ("registered", "open")


@dataclass(frozen=True)
class ChainConfig:
    chain_id: int = 1337
    base_fee: int = 0  # wei per gas: the gas price floor (0: gas-free, as GoQuorum networks run)
    block_gas_limit: int = 30_000_000  # bounds each transaction's gas
    senders: str = "registered"  # "registered": only accounts governance registered; "open": any
    coinbase: str = "0x" + "00" * 20  # receives priority fees; base fees are burnt
    allow_unprotected: bool = False  # legacy transactions without EIP-155 chain id (geth refuses them)

    def to_json(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "base_fee": self.base_fee,
            "block_gas_limit": self.block_gas_limit,
            "senders": self.senders,
            "coinbase": self.coinbase,
            "allow_unprotected": self.allow_unprotected,
        }


def from_record(record: dict[str, Any] | None) -> ChainConfig:
    return replace(ChainConfig(), **record) if record else ChainConfig()


def check_address(value: object, what: str = "address") -> str:
    """A 20-byte address as `0x` + 40 hex digits (any case); returns it lowercase."""
    if not isinstance(value, str) or len(value) != 42 or value[:2] not in ("0x", "0X"):
        raise ValueError(f"{what} must be 0x followed by 40 hex digits")
    try:
        bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"{what} must be 0x followed by 40 hex digits") from None
    return value.lower()


def validate_chain(args: dict[str, Any]) -> dict[str, Any]:
    """Arguments of `set_eth_chain`: any subset of the configuration's fields."""
    fields = ChainConfig().to_json()
    out: dict[str, Any] = {}
    for name, value in args.items():
        if name not in fields:
            raise ValueError(f"unknown chain setting {name[:40]!r}")
        if name in ("chain_id", "base_fee", "block_gas_limit"):
            limit = 2**63 if name == "base_fee" else 2**53
            if type(value) is not int or not (0 if name == "base_fee" else 1) <= value < limit:
                raise ValueError(f"{name} must be a non-negative integer below {limit}")
            if name == "block_gas_limit" and value < 21_000:
                raise ValueError("block_gas_limit must be at least 21000")
        elif name == "senders":
            if value not in SENDER_POLICIES:
                raise ValueError(f"senders must be one of {', '.join(SENDER_POLICIES)}")
        elif name == "coinbase":
            value = check_address(value, "coinbase")
        elif type(value) is not bool:
            raise ValueError(f"{name} must be true or false")
        out[name] = value
    return out


def parse_wei(value: object, what: str) -> int:
    """A balance as an integer or a decimal/`0x` string, 0 to 2**256 - 1."""
    if type(value) is int:
        n = value
    elif isinstance(value, str) and value[:2] in ("0x", "0X") and 2 < len(value) <= 66:
        n = int(value, 16)
    elif isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 78:
        n = int(value)
    else:
        raise ValueError(f"{what} must be an integer, a decimal string or 0x hex")
    if not 0 <= n < 2**256:
        raise ValueError(f"{what} is out of range")
    return n


def account_row(nonce: int, balance: int, code_hash: str) -> list[Any]:
    return [nonce, hex(balance), code_hash]
