"""`conclavium ledger audit DIR`: verify an executor's persisted ledger from genesis.

The audit replays the ledger with the executor's own rules, so it runs the executor program in its
audit mode (`conclavium-executor audit DIR`) as a separate process rather than importing it.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Any

from conclavium.local.processes import service_command

from .context import CliError


def cmd_audit(args: argparse.Namespace) -> int:
    if not Path(args.dir).is_dir():
        raise CliError(f"{args.dir} is not a directory (give an executor's data directory)")
    argv = [*service_command("conclavium-executor", "services.executor.main"), "audit", str(args.dir)]
    return subprocess.run(argv, check=False).returncode


def register(sub: Any) -> None:
    ledger = sub.add_parser("ledger", help="persisted ledgers").add_subparsers(dest="ledger_command", required=True)
    p = ledger.add_parser("audit", help="verify an executor's data directory from genesis; exit 0 when sound")
    p.add_argument("dir")
    p.set_defaults(func=cmd_audit)
