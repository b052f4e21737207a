"""`conclavium ledger audit DIR [--without-secrets]`: verify a persisted ledger from genesis.

The audit replays the ledger with the executor's own rules, so it runs the executor program in its
audit mode (`conclavium-executor audit DIR`) as a separate process rather than importing it. With
the ledger secrets in DIR it replays everything; without them it checks what needs no plaintext.
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
    if args.without_secrets:
        argv.append("--without-secrets")
    return subprocess.run(argv, check=False).returncode


def register(sub: Any) -> None:
    ledger = sub.add_parser("ledger", help="persisted ledgers").add_subparsers(dest="ledger_command", required=True)
    p = ledger.add_parser(
        "audit",
        help="verify a persisted ledger from genesis (an executor's data directory, or a copy of its ledger/ "
        "and snapshots/); prints one report, exit 0 when everything checkable passed",
    )
    p.add_argument("dir")
    p.add_argument(
        "--without-secrets",
        action="store_true",
        help="ignore the directory's ledger secrets and check only what a member without them can",
    )
    p.set_defaults(func=cmd_audit)
