"""Applications: what a client entry means, behind one small interface (`base.Application`).

The core orders, verifies, applies, signs and commits entries; an application parses and checks
its own entries (with its own signature scheme), executes them against the block's staged state,
gives the write digest for their Merkle leaf, and answers its queries. `kv` is the native
key-value application.
"""

from .base import Application, Context, Namespaces
from .kv import KeyValueApp


def default_apps() -> list[Application]:
    """The applications this executor implements, one instance per machine (they hold caches)."""
    return [KeyValueApp()]


__all__ = ["Application", "Context", "KeyValueApp", "Namespaces", "default_apps"]
