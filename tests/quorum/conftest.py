"""The Quorum tests use the governance tests' harness for the party-key actions."""

import sys
from pathlib import Path

_path = str(Path(__file__).resolve().parents[1] / "governance")
if _path not in sys.path:
    sys.path.insert(0, _path)
