"""Sawtooth transaction processors for a local network: the families `conclavium local up
--sawtooth` can start, and the Python 3.9 that runs them (the Sawtooth SDK's processor runtime does
not run on newer Pythons; scripts/install-tools.sh sets it up in .tools/sawtooth-py39, or
CONCLAVIUM_SAWTOOTH_PYTHON names another)."""

from __future__ import annotations

import os
from pathlib import Path

from conclavium.sawtooth import APP

__all__ = ["APP", "FAMILY_VERSIONS", "TP_SCRIPTS", "sdk_python", "tp_command"]

ROOT = Path(__file__).resolve().parents[2]
TP_SCRIPTS = {
    "intkey": ROOT / "examples" / "sawtooth" / "intkey_tp.py",
    "xo": ROOT / "examples" / "sawtooth" / "xo_tp.py",
}
FAMILY_VERSIONS = {"intkey": "1.0", "xo": "1.0"}


def sdk_python() -> Path:
    """The interpreter with sawtooth-sdk installed; FileNotFoundError with what to run if absent."""
    named = os.environ.get("CONCLAVIUM_SAWTOOTH_PYTHON")
    path = Path(named) if named else ROOT / ".tools" / "sawtooth-py39" / "bin" / "python"
    if not path.exists():
        raise FileNotFoundError(f"no Python with the Sawtooth SDK at {path}: run scripts/install-tools.sh")
    return path


def tp_command(family: str, endpoint: str) -> list[str]:
    """The command line of `family`'s TP connecting to `endpoint`."""
    script = TP_SCRIPTS.get(family)
    if script is None:
        raise ValueError(f"no transaction processor for family {family!r} (known: {', '.join(sorted(TP_SCRIPTS))})")
    return [str(sdk_python()), str(script), endpoint]
