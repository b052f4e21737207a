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
SAWTOOTH_HELD = Gauge(
    "conclavium_gateway_sawtooth_held_batches",
    "Sawtooth batches this gateway holds before ordering until their family's transaction processor"
    " registers (at most 1,000; beyond it POST /batches is 503)",
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
INTAKE_NO_LEADER_RETRIES = Counter(
    "conclavium_gateway_intake_no_leader_retries_total",
    "Intake publishes repeated because no intake stream leader answered (a NATS leader election);"
    " the client is answered 503 only once the publish timeout is spent",
)
STATUS_EVENTS = Counter("conclavium_gateway_status_events_total", "Status events applied", ["status"])
NOTARY_REQUESTS = Counter("conclavium_gateway_notary_requests_total", "Notarisation requests accepted into the intake")
RPC_REQUESTS = Counter(
    "conclavium_gateway_rpc_requests_total", "Ethereum JSON-RPC calls, by method and outcome", ["method", "outcome"]
)
UNENDORSED_READS = Counter(
    "conclavium_gateway_unendorsed_reads_total",
    "Reads answered unsigned by a node that is not endorsed, because no endorsed node answered",
)
TX_KEY_VOUCHES = Gauge(
    "conclavium_gateway_tx_key_vouches",
    "Signed transaction-key vouches the last GET /v1/service/tx-key collected from the executors (clients"
    " seal only when nodes of k distinct members are among them)",
)
WS_CONNECTIONS = Gauge("conclavium_gateway_ws_connections", "Open JSON-RPC WebSockets on this gateway")
WS_SUBSCRIPTIONS = Gauge(
    "conclavium_gateway_ws_subscriptions", "Open eth_subscribe subscriptions on this gateway", ["kind"]
)
WS_MESSAGES = Counter(
    "conclavium_gateway_ws_messages_sent_total",
    "Messages written to JSON-RPC WebSockets (kind: response to a call, or subscription notification)",
    ["kind"],
)
WS_DROPPED = Counter(
    "conclavium_gateway_ws_messages_dropped_total",
    "Messages not sent because the socket's bounded queue was full (the client reads too slowly);"
    " the socket is then closed",
    ["kind"],
)
WS_SLOW_CLOSED = Counter(
    "conclavium_gateway_ws_slow_consumers_closed_total",
    "JSON-RPC WebSockets closed because the client did not read what it was sent",
)
WS_FOLLOW_ERRORS = Counter(
    "conclavium_gateway_ws_follow_errors_total",
    "Failed polls of the executors for new heads and logs for subscriptions (retried)",
)
