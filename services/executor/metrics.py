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
CONSUMER_STALLS = Counter(
    "conclavium_executor_consumer_stalls_total",
    "Ledger consumers re-created because they delivered nothing while the stream held more",
)
LAG = Gauge("conclavium_executor_consumer_lag", "Blocks in the ledger stream not yet executed")
FORK = Gauge("conclavium_executor_fork_detected", "1 when this node's roots diverged from a quorum's")
TRUSTED_NODES = Gauge("conclavium_executor_trusted_nodes", "Trusted, endorsed executors")
ATTESTATION_DRIFT = Gauge(
    "conclavium_executor_attestation_drift_nodes",
    "Trusted nodes whose recorded attestation no longer meets the current node policy",
)
QUORUM = Gauge("conclavium_executor_quorum", "Signatures required to commit a block")
LAST_SIGNERS = Gauge(
    "conclavium_executor_last_commit_signers",
    "Signatures counted when the last block committed (the quorum, often exactly: later ones are not counted)",
)
SIGNING_NODES = Gauge(
    "conclavium_executor_signing_nodes",
    "Nodes whose signatures count (trusted, endorsed by an active member) with a valid commit signature "
    "this node saw within 100 heights of the newest one",
)
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
NOTARY_REQUESTS = Counter(
    "conclavium_executor_notary_requests_total",
    "Notarisation requests executed here, by outcome (notarised, repeat, conflict, time_window_invalid, refused)",
    ["outcome"],
)
# the children by label, looked up once: `labels()` costs a notarisation a few µs
NOTARY_OUTCOMES = {
    o: NOTARY_REQUESTS.labels(o) for o in ("notarised", "repeat", "conflict", "time_window_invalid", "refused")
}
NOTARY_CONFLICTING_STATES = Counter(
    "conclavium_executor_notary_conflicting_states_total",
    "States named by refused notarisations that another transaction had consumed, by how they were named",
    ["type"],
)
NOTARY_CONFLICTS_BY_TYPE = {t: NOTARY_CONFLICTING_STATES.labels(t) for t in ("INPUT_STATE", "REFERENCE_STATE")}
RECOVERY_WAITING = Gauge(
    "conclavium_executor_recovery_waiting",
    "1 while this node, started with --recover, waits for the members' recovery shares",
)
RECOVERY_SHARES_RECEIVED = Gauge(
    "conclavium_executor_recovery_shares_received", "Good recovery shares this recovering node holds"
)
RECOVERY_SHARES_REQUIRED = Gauge(
    "conclavium_executor_recovery_shares_required", "Recovery shares the share set in force needs (its threshold)"
)
RECOVERY_SHARES_REFUSED = Gauge(
    "conclavium_executor_recovery_shares_refused", "Members whose recovery share this recovering node refused"
)
RECOVERY_SET_STALE = Gauge(
    "conclavium_executor_recovery_share_set_stale",
    "1 while the ledger's recovery share set does not cover the current members, threshold or secrets",
)
READ_ANSWERS = Counter(
    "conclavium_executor_read_answers_total",
    "Query answers sent, by whether they carry this node's signature (unsigned: not yet an endorsed node)",
    ["signed"],
)
for _signed in ("yes", "no"):
    READ_ANSWERS.labels(_signed)
READ_SIGN_SECONDS = Histogram(
    "conclavium_executor_read_sign_seconds",
    "Time to sign one batch of read answers (hashing, Merkle tree, one node-key signature)",
    buckets=(0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.02),
)
READ_BATCH_SIZE = Histogram(
    "conclavium_executor_read_batch_size",
    "Read answers covered by one signature (those answered in one turn of the event loop)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 512),
)
SAWTOOTH_OUTCOMES = (
    "executed",
    "invalid_transaction",
    "tp_internal_error",
    "unknown_family",
    "unregistered_signer",
    "refused",
)
SAWTOOTH_BATCHES = Counter(
    "conclavium_executor_sawtooth_batches_total",
    "Sawtooth batches executed here, by outcome (executed, invalid_transaction, tp_internal_error, "
    "unknown_family, unregistered_signer, refused: a header rule, a duplicate or a missing dependency)",
    ["outcome"],
)
for _outcome in SAWTOOTH_OUTCOMES:
    SAWTOOTH_BATCHES.labels(_outcome)
SAWTOOTH_TP_ATTEMPTS = Counter(
    "conclavium_executor_sawtooth_tp_failed_attempts_total",
    "Transactions a Sawtooth TP did not answer OK, by answer (invalid, internal_error: also undecodable, timeout)",
    ["answer"],
)
for _answer in ("invalid", "internal_error", "timeout"):
    SAWTOOTH_TP_ATTEMPTS.labels(_answer)
SAWTOOTH_TP_UNAVAILABLE = Counter(
    "conclavium_executor_sawtooth_tp_unavailable_total",
    "Times a block stopped here because no TP was registered for a transaction's family (or it went away)",
)
APP_UNAVAILABLE = Gauge(
    "conclavium_executor_app_unavailable",
    "1 while this node stands before a block that an application cannot run here now (a Sawtooth family "
    "without a registered TP): not executing, not signing",
)
SIGNING_MEMBERS = Gauge(
    "conclavium_executor_signing_members",
    "Distinct members with a node that counts for commits and keeps signing (as signing_nodes counts nodes)",
)
MEMBER_THRESHOLD = Gauge(
    "conclavium_executor_member_threshold", "Distinct members' nodes a commit needs (the consortium identity's k)"
)
QUORUM_UNREACHABLE = Gauge(
    "conclavium_executor_quorum_unreachable",
    "1 when too few members' nodes (or nodes) can sign for any block to commit",
)
