"""The Sawtooth tests use the executor's block harness."""

import sys
from pathlib import Path

for _dir in ("executor", "ledger", ""):
    _path = str(Path(__file__).resolve().parents[1] / _dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)
