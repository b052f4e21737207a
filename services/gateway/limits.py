"""Request size limits every protocol's routes share."""

from conclavium.tx import MAX_TX_BYTES

MAX_BATCH = 1000
MAX_SINGLE_BODY = 2 * MAX_TX_BYTES
MAX_BATCH_BODY = 16 * 1024 * 1024
