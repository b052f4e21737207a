"""The notary's tests use the executor's block harness, the ledger tests' helpers and the
hostile-gateway server of the client-trust tests."""

import sys
from pathlib import Path

for _dir in ("executor", "ledger", "faults", "confidentiality", ""):
    _path = str(Path(__file__).resolve().parents[1] / _dir)
    if _path not in sys.path:
        sys.path.insert(0, _path)
