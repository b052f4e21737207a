"""Request size limits every protocol's routes share."""

from conclavium.tx import MAX_TX_BYTES

MAX_BATCH = 1000
MAX_SINGLE_BODY = 2 * MAX_TX_BYTES
MAX_BATCH_BODY = 16 * 1024 * 1024

# The HTTP layer's framing bound on a request line and on each header field (aiohttp's default is
# 8190 bytes). Beyond it aiohttp itself refuses the request, before any route, with a plain-text 400;
# within it every refusal is the gateway's JSON error. The longest URL the API defines (a
# 512-character key of 4-byte characters, percent-encoded) is about 6 KiB.
MAX_HTTP_LINE = 64 * 1024
