"""The Quorum tests use the governance tests' harness for the party-key actions and the Ethereum
tests' compiled contracts."""

import sys
from pathlib import Path

for _dir in ("governance", "eth"):
    _path = str(Path(__file__).resolve().parents[1] / _dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)
