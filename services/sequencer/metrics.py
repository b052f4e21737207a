"""The sequencer's Prometheus metrics (names are part of the chart's alert rules)."""

from prometheus_client import Counter, Gauge, Histogram

ACTIVE = Gauge("conclavium_sequencer_active", "1 while this replica holds the lease and orders blocks")
BLOCKS = Counter("conclavium_sequencer_blocks_total", "Blocks appended to the ledger stream")
TX_SEQUENCED = Counter("conclavium_sequencer_tx_sequenced_total", "Entries ordered into blocks")
SIGS_SEQUENCED = Counter("conclavium_sequencer_signatures_sequenced_total", "Commit signatures ordered")
BLOCK_SIZE = Histogram(
    "conclavium_sequencer_block_size",
    "Entries per block",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000),
)
APPEND_SECONDS = Histogram(
    "conclavium_sequencer_append_seconds",
    "Time to append one block to the ledger stream",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
)
HEIGHT = Gauge("conclavium_sequencer_height", "Height of the last appended block")
CONFLICTS = Counter(
    "conclavium_sequencer_append_conflicts_total", "Appends refused because the stream moved (another writer)"
)
FOREIGN_BLOCKS = Counter(
    "conclavium_sequencer_foreign_blocks_total", "Messages in the ledger stream that do not extend the chain"
)
STREAM_REPLICAS = Gauge(
    "conclavium_sequencer_stream_replicas",
    "Replicas configured for each of the ledger's JetStream streams (intake, ledger, sequencer_kv)",
    ["stream"],
)
STREAM_REPLICAS_CURRENT = Gauge(
    "conclavium_sequencer_stream_replicas_current",
    "Replicas of each stream that are up to date: its leader and the followers JetStream reports current "
    "(0 when the stream has no leader or does not answer)",
    ["stream"],
)
