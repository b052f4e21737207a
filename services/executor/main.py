"""`conclavium-executor`: run one executor node."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from conclavium import rules
from conclavium.runtime import run_service, service_arguments, setup_logging

from .executor import Executor, ExecutorConfig


def parse_args(argv: list[str] | None = None) -> ExecutorConfig:
    p = service_arguments("conclavium-executor", __doc__, name="executor-0")
    p.add_argument("--data-dir", type=Path, default=Path(os.environ.get("CONCLAVIUM_DATA_DIR", "data")))
    p.add_argument("--genesis", type=Path, help="genesis configuration: start a new service with it")
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=9100)
    p.add_argument("--quorum-host", default="127.0.0.1", help="the Quorum party endpoint's address (docs/quorum.md)")
    p.add_argument("--quorum-port", type=int, default=0, help="serve the Quorum party endpoint (TLS) here; 0: none")
    p.add_argument("--verify-threads", type=int, default=2)
    p.add_argument(
        "--tee",
        default=os.environ.get("CONCLAVIUM_TEE", "virtual"),
        choices=["virtual", "configfs-tsm", "sev-guest", "gramine"],
        help="where attestation evidence comes from (virtual: development only)",
    )
    p.add_argument(
        "--attestation-url",
        default=os.environ.get("CONCLAVIUM_ATTESTATION_URL", ""),
        help="attestation service fetching the collateral this node's evidence needs (TDX, SGX, SNP without VCEK)",
    )
    p.add_argument(
        "--virtual-measurement",
        default="",
        help="hex measurement the virtual TEE reports (development: stands for a build, e.g. to rehearse upgrades)",
    )
    p.add_argument("--snapshot-every", type=int, default=100_000, help="snapshot after this many entries")
    p.add_argument("--blocks-per-chunk", type=int, default=10_000)
    p.add_argument(
        "--rules-versions",
        default="",
        help="comma-separated rules versions to run (default: all this build implements); pins an "
        "executor to older rules, e.g. to rehearse an upgrade: it stops before a newer version activates",
    )
    p.add_argument(
        "--recover",
        action="store_true",
        help="every executor of the ledger is lost: start from a copy of the ledger files (DATA_DIR/ledger) and "
        "recover the ledger secrets from the members' recovery shares (docs/recovery.md)",
    )
    p.add_argument("--open-workers", type=int, default=1, help="processes opening sealed transactions (0: inline)")
    p.add_argument(
        "--sawtooth-tp",
        default=os.environ.get("CONCLAVIUM_SAWTOOTH_TP", ""),
        help="ZeroMQ endpoint (tcp://HOST:PORT) on which this node's Sawtooth transaction processors connect "
        "(docs/sawtooth.md); none by default",
    )
    a = p.parse_args(argv)
    if a.virtual_measurement:
        try:
            raw = bytes.fromhex(a.virtual_measurement)
        except ValueError:
            p.error("--virtual-measurement must be hex")
        if not 0 < len(raw) <= 64 or a.tee != "virtual":
            p.error("--virtual-measurement is 1-64 bytes of hex and only for --tee virtual")
    versions = rules.IMPLEMENTED
    if a.rules_versions:
        try:
            versions = frozenset(int(v) for v in a.rules_versions.split(","))
        except ValueError:
            p.error("--rules-versions is a comma-separated list of integers")
        if not versions <= rules.IMPLEMENTED:
            p.error(f"--rules-versions: this build implements {sorted(rules.IMPLEMENTED)}")
    setup_logging(a.log_level)
    return ExecutorConfig(
        rules_versions=versions,
        ledger=a.ledger,
        name=a.name,
        data_dir=a.data_dir,
        nats_url=a.nats_url,
        genesis=a.genesis,
        http_host=a.http_host,
        http_port=a.http_port,
        quorum_host=a.quorum_host,
        quorum_port=a.quorum_port,
        verify_threads=a.verify_threads,
        stream_replicas=a.stream_replicas,
        tee=a.tee,
        attestation_url=a.attestation_url,
        virtual_measurement=a.virtual_measurement,
        snapshot_every=a.snapshot_every,
        blocks_per_chunk=a.blocks_per_chunk,
        open_workers=a.open_workers,
        recover=a.recover,
        sawtooth_tp=a.sawtooth_tp,
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["audit"]:
        from .audit import main as audit_main

        sys.exit(audit_main(args[1:]))
    cfg = parse_args(args)
    run_service(Executor(cfg).run)


if __name__ == "__main__":
    main()
