"""`conclavium attestation verify`: check evidence offline, print its claims, optionally judge a policy.

Exit codes: 0 authentic (and, with --policy, accepted), 1 evidence not authentic, 2 usage or input
error, 3 authentic but refused by the policy. The failed check is printed as JSON on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from conclavium.attestation import (
    PLATFORMS,
    AttestationError,
    PolicyError,
    evaluate_policy,
    load_policy,
    verify_evidence,
)
from conclavium.attestation.policy import Policy

EXIT_OK, EXIT_NOT_AUTHENTIC, EXIT_USAGE, EXIT_POLICY = 0, 1, 2, 3


def _read_dir(path: str | None) -> dict[str, bytes]:
    if not path:
        return {}
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{path} is not a directory")
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def _certs(path: str | None) -> list[bytes]:
    return [data for name, data in _read_dir(path).items() if name.endswith((".pem", ".der", ".cer", ".crt"))]


def _load_public_key(path: str) -> bytes:
    from conclavium.crypto.keys import PublicKey

    return PublicKey.load(Path(path).read_bytes()).spki


def _error(check: str, message: str) -> None:
    print(json.dumps({"error": {"check": check, "message": message}}), file=sys.stderr)


def handle_verify(args: argparse.Namespace) -> int:
    """Verify one evidence file; see the module docstring for exit codes."""
    try:
        evidence = Path(args.file).read_bytes()
        certs = _certs(args.certs)
        collateral = _read_dir(args.collateral)
        event_log = Path(args.event_log).read_bytes() if args.event_log else None
        at = datetime.fromisoformat(args.at.replace("Z", "+00:00")) if args.at else datetime.now().astimezone()
        if at.tzinfo is None:
            raise ValueError("--at needs a timezone, e.g. 2025-06-19T12:00:00Z")
        policy: Policy | None = load_policy(Path(args.policy).read_bytes()) if args.policy else None
        public_keys = [_load_public_key(p) for p in args.public_key or []]
        report_data = bytes.fromhex(args.report_data) if args.report_data else None
    except PolicyError as e:
        _error(e.check, e.message)
        return EXIT_USAGE
    except (OSError, ValueError) as e:
        _error("input", str(e))
        return EXIT_USAGE
    try:
        claims = verify_evidence(
            args.platform, evidence, certs=certs, collateral=collateral, event_log=event_log, at=at, policy=policy
        )
    except AttestationError as e:
        _error(e.check, e.message)
        return EXIT_NOT_AUTHENTIC
    out: dict[str, Any] = claims.to_dict()
    code = EXIT_OK
    if policy is not None:
        result = evaluate_policy(claims, policy, public_keys=public_keys or None, report_data=report_data, at=at)
        out = {"claims": out, "policy": result.to_dict()}
        if not result.allowed:
            check, message = result.failures[0]
            _error(check, message)
            code = EXIT_POLICY
    print(json.dumps(out, indent=2, sort_keys=True))
    return code


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `attestation verify` to the `conclavium` command."""
    parser = subparsers.add_parser("attestation", help="verify TEE attestation evidence")
    sub = parser.add_subparsers(dest="attestation_command", required=True)
    verify = sub.add_parser("verify", help="verify evidence and print its claims as JSON")
    verify.add_argument("file", help="evidence file (SNP report, DCAP quote, or virtual JSON)")
    verify.add_argument("--platform", required=True, choices=PLATFORMS)
    verify.add_argument("--certs", help="directory with the SNP VCEK/VLEK (+ optional ASK/ASVK, ARK)")
    verify.add_argument(
        "--collateral", help="directory with Intel TCB info, QE identity, CRLs, signing chain; or the AMD CRL"
    )
    verify.add_argument("--event-log", help="TDX event log (CCEL) file, replayed into the quote's RTMRs")
    verify.add_argument("--at", help="verification time, ISO 8601 with timezone (default: now)")
    verify.add_argument("--policy", help="policy JSON file to evaluate the claims against")
    verify.add_argument("--public-key", action="append", help="node public key (PEM/DER) bound in report data")
    verify.add_argument("--report-data", help="expected report data (hex) instead of --public-key")
    verify.set_defaults(func=handle_verify)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (`python -m conclavium.cli.attestation verify ...`)."""
    parser = argparse.ArgumentParser(prog="conclavium")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["attestation", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
