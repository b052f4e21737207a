"""Applications: what a client entry means, behind one small interface (`base.Application`).

The core orders, verifies, applies, signs and commits entries; an application parses and checks
its own entries (with its own signature scheme), executes them against the block's staged state,
gives the write digest for their Merkle leaf, and answers its queries. `kv` is the native
key-value application, `notary` the Corda-style notary (docs/notary.md), `eth` the Ethereum one (EVM,
docs/ethereum.md), `sawtooth` Sawtooth's transaction families, run by their own TPs, `quorum` GoQuorum
private transactions (docs/quorum.md).
"""

from ..sawtooth_tp import TpRouter
from .base import Application, Context, Namespaces
from .eth import EthereumApp
from .kv import KeyValueApp
from .notary import NotaryApp
from .quorum import QuorumApp
from .sawtooth import SawtoothApp


def default_apps(sawtooth: TpRouter | None = None) -> list[Application]:
    """The applications this executor implements, one instance per machine (they hold caches);
    `sawtooth` is the endpoint this node's Sawtooth TPs connect to, if it serves one."""
    return [KeyValueApp(), NotaryApp(), EthereumApp(), SawtoothApp(sawtooth), QuorumApp()]


__all__ = [
    "Application",
    "Context",
    "EthereumApp",
    "KeyValueApp",
    "Namespaces",
    "NotaryApp",
    "QuorumApp",
    "SawtoothApp",
    "default_apps",
]
