"""`conclavium-sequencer`: run one sequencer replica."""

from __future__ import annotations

import os

from conclavium.runtime import run_service, service_arguments, setup_logging

from .sequencer import Sequencer, SequencerConfig


def parse_args(argv: list[str] | None = None) -> SequencerConfig:
    p = service_arguments("conclavium-sequencer", __doc__, name="sequencer-0")
    p.add_argument("--http-host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=9200)
    p.add_argument("--block-interval-ms", type=float, default=5.0, help="how long to fill a block under load")
    p.add_argument(
        "--fill-above-entries", type=int, default=200, help="fill blocks only after a block at least this large"
    )
    p.add_argument("--max-block-entries", type=int, default=4000)
    p.add_argument(
        "--max-block-bytes", type=int, default=900_000, help="keep below the NATS server's max_payload (1 MB default)"
    )
    p.add_argument(
        "--lease-ttl",
        type=float,
        default=float(os.environ.get("CONCLAVIUM_SEQUENCER_LEASE_TTL", "2.0")),
        help="seconds without renewal after which a standby takes over (renewed every third of it)",
    )
    p.add_argument(
        "--unsafe-ignore-lease",
        action="store_true",
        help="testing only: append without holding the lease, to show the stream refuses a fork",
    )
    a = p.parse_args(argv)
    setup_logging(a.log_level)
    return SequencerConfig(
        ledger=a.ledger,
        name=a.name,
        nats_url=a.nats_url,
        http_host=a.http_host,
        http_port=a.http_port,
        block_interval_ms=a.block_interval_ms,
        fill_above_entries=a.fill_above_entries,
        max_block_entries=a.max_block_entries,
        max_block_bytes=a.max_block_bytes,
        stream_replicas=a.stream_replicas,
        lease_ttl_s=a.lease_ttl,
        ignore_lease=a.unsafe_ignore_lease,
    )


def main(argv: list[str] | None = None) -> None:
    run_service(Sequencer(parse_args(argv)).run)


if __name__ == "__main__":
    main()
