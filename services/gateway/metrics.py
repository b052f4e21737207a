"""The gateway's Prometheus metrics (names are part of the chart's alert rules)."""

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("conclavium_gateway_requests_total", "HTTP requests", ["route", "method", "code"])
REQUEST_SECONDS = Histogram(
    "conclavium_gateway_request_duration_seconds",
    "HTTP request duration",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TX_RECEIVED = Counter("conclavium_gateway_tx_received_total", "Transactions accepted into the intake")
TX_REJECTED = Counter("conclavium_gateway_tx_rejected_total", "Transactions refused at the gateway", ["reason"])
UNCOMMITTED = Gauge(
    "conclavium_gateway_uncommitted_transactions",
    "Transactions accepted by this gateway and not yet committed or refused (bounded by the admission bound)",
)
ADMISSION_BOUND = Gauge(
    "conclavium_gateway_admission_bound_transactions",
    "Uncommitted transactions this gateway accepts before answering 503 overloaded: the recent commit"
    " rate times --max-queue-seconds, at least 5,000, at most --max-uncommitted (0: no bound)",
)
SUBMIT_TO_COMMIT = Histogram(
    "conclavium_gateway_submit_to_commit_seconds",
    "From acceptance at this gateway to the commit event",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INTAKE_BATCH = Histogram(
    "conclavium_gateway_intake_batch_size",
    "Entries per intake message",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000),
)
INTAKE_PUBLISH_SECONDS = Histogram(
    "conclavium_gateway_intake_publish_seconds",
    "Time for JetStream to acknowledge an intake message",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1),
)
STATUS_EVENTS = Counter("conclavium_gateway_status_events_total", "Status events applied", ["status"])
