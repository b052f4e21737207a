"""The executor's Prometheus metrics (names are part of the chart's alert rules)."""

from prometheus_client import Counter, Gauge, Histogram

TX_COMMITTED = Counter("conclavium_executor_tx_committed_total", "Transactions committed")
TX_INVALID = Counter("conclavium_executor_tx_invalid_total", "Transactions found invalid", ["reason"])
BLOCKS = Counter("conclavium_executor_blocks_executed_total", "Blocks executed")
REJECTED_BLOCKS = Counter(
    "conclavium_executor_rejected_blocks_total", "Blocks refused (broken hash chain, malformed)", ["reason"]
)
EXECUTED_HEIGHT = Gauge("conclavium_executor_executed_height", "Height of the last executed block")
COMMITTED_HEIGHT = Gauge("conclavium_executor_committed_height", "Height up to which all is committed")
LAG = Gauge("conclavium_executor_consumer_lag", "Blocks in the ledger stream not yet executed")
FORK = Gauge("conclavium_executor_fork_detected", "1 when this node's roots diverged from a quorum's")
TRUSTED_NODES = Gauge("conclavium_executor_trusted_nodes", "Trusted, endorsed executors")
ATTESTATION_DRIFT = Gauge(
    "conclavium_executor_attestation_drift_nodes",
    "Trusted nodes whose recorded attestation no longer meets the current node policy",
)
QUORUM = Gauge("conclavium_executor_quorum", "Signatures required to commit a block")
LAST_SIGNERS = Gauge("conclavium_executor_last_commit_signers", "Signers seen on the last committed block")
BLOCK_SECONDS = Histogram(
    "conclavium_executor_block_seconds",
    "Time to execute one block",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
)
COMMIT_DELAY = Histogram(
    "conclavium_executor_commit_delay_seconds",
    "From block timestamp to commit on this executor",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
)
QUERIES = Counter("conclavium_executor_queries_total", "Queries answered", ["type", "result"])
GOV_PROPOSALS = Gauge("conclavium_governance_proposals", "Governance proposals by state", ["state"])
GOV_BALLOTS = Counter("conclavium_governance_ballots_total", "Ballots recorded in the ledger")
CORRUPT_FILES = Counter("conclavium_executor_corrupt_files_total", "Ledger chunks or snapshots refused at load")
SNAPSHOTS = Counter("conclavium_executor_snapshots_total", "Snapshots written")
BLOCK_TIME_CLAMPED = Counter(
    "conclavium_executor_block_time_clamped_total",
    "Blocks whose timestamp lay more than clock_tolerance_ms from the executors' signed clocks",
    ["direction"],
)
for _direction in ("ahead", "behind"):
    BLOCK_TIME_CLAMPED.labels(_direction)
LEDGER_TIME_OFFSET = Gauge(
    "conclavium_executor_ledger_time_offset_seconds", "Time of the last executed block minus this node's clock"
)
CLOCKS_SIGNED = Counter("conclavium_executor_clock_signatures_total", "Clock signatures published", ["kind"])
RULES_VERSION = Gauge("conclavium_executor_rules_version", "Rules version active at this node's tip")
RULES_UNSUPPORTED = Gauge(
    "conclavium_executor_rules_unsupported",
    "1 when the ledger's active rules (version or application) are not implemented here: not signing",
)
