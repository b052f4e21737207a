"""The Ethereum application (EVM on pyrevm) and its JSON-RPC queries."""

from .app import EthereumApp

__all__ = ["EthereumApp"]
