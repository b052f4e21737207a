"""Sawtooth's REST API, the subset the ledger's gateway serves: its error bodies and their fixed
codes, and the shapes clients read (`intkey`, the SDKs' REST clients).

An error is `{"error": {"code": <int>, "title": <str>, "message": <str>}}` with an HTTP status;
Sawtooth documents that the integer code is fixed and names the problem, so clients may match on it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from .pb.sawtooth_pb2 import Batch, BatchHeader, Transaction, TransactionHeader

MAX_WAIT_S = 300  # the longest `wait` on /batch_statuses (Sawtooth's default REST timeout)
MAX_STATE_PAGE = 1000  # the largest `limit` on /state (Sawtooth's paging maximum)
DEFAULT_STATE_PAGE = 100
BATCH_STATUSES = ("COMMITTED", "INVALID", "PENDING", "UNKNOWN")


@dataclass(frozen=True)
class RestError:
    code: int
    status: int
    title: str
    message: str

    def body(self, detail: str = "") -> dict[str, dict[str, object]]:
        return {"error": {"code": self.code, "title": self.title, "message": self.message + detail}}


VALIDATOR_NOT_READY = RestError(15, 503, "Validator Not Ready", "The ledger cannot answer yet; try again later.")
VALIDATOR_TIMED_OUT = RestError(17, 503, "Validator Timed Out", "No executor answered in time; try again later.")
UNKNOWN_VALIDATOR_ERROR = RestError(10, 500, "Unknown Validator Error", "The ledger could not answer the request: ")
BATCH_QUEUE_FULL = RestError(
    31, 503, "Unable to Accept Batches", "Batches are waiting for their transaction processors; try again later: "
)
SUBMITTED_BATCHES_INVALID = RestError(
    30, 400, "Submitted Batches Invalid", "The submitted BatchList is malformed or badly signed: "
)
NO_BATCHES_SUBMITTED = RestError(34, 400, "No Batches Submitted", "The submitted BatchList holds no batches.")
BAD_PROTOBUF_SUBMITTED = RestError(35, 400, "Protobuf Not Decodable", "The submitted BatchList could not be decoded.")
SUBMISSION_WRONG_CONTENT_TYPE = RestError(
    42, 400, "Wrong Content Type", "Submit a serialized BatchList with Content-Type application/octet-stream."
)
HEAD_NOT_FOUND = RestError(50, 404, "Head Not Found", "This ledger answers from its current head only: ")
COUNT_INVALID = RestError(53, 400, "Invalid Count Query", "The 'limit' query parameter is a positive integer: ")
PAGING_INVALID = RestError(54, 400, "Invalid Paging Query", "The paging parameters are invalid: ")
INVALID_RESOURCE_ID = RestError(
    60, 400, "Invalid Resource Id", "Batch and transaction ids are 128 hex digits, block ids 64: "
)
INVALID_STATE_ADDRESS = RestError(
    62, 400, "Invalid State Address", "A state address is 70 hex digits (a prefix of one in /state?address=): "
)
STATUS_ID_QUERY_INVALID = RestError(
    66, 400, "Id Query Invalid or Missing", "Give an 'id' query parameter: batch ids separated by commas."
)
BLOCK_NOT_FOUND = RestError(70, 404, "Block Not Found", "There is no block with the id specified in the blockchain.")
BATCH_NOT_FOUND = RestError(71, 404, "Batch Not Found", "There is no batch with the id specified in the blockchain.")
TRANSACTION_NOT_FOUND = RestError(
    72, 404, "Transaction Not Found", "There is no transaction with the id specified in the blockchain."
)
STATE_NOT_FOUND = RestError(75, 404, "State Not Found", "There is no state data at the address specified.")
RECEIPT_NOT_FOUND = RestError(
    80, 404, "Transaction Receipt Not Found", "There is no transaction receipt for the transaction id specified: "
)

# Batch errors (conclavium.sawtooth.batch) that are not SUBMITTED_BATCHES_INVALID.
BATCH_ERRORS = {"bad_protobuf": BAD_PROTOBUF_SUBMITTED, "no_batches": NO_BATCHES_SUBMITTED}


def wait_seconds(text: str | None) -> float:
    """The `wait` parameter: absent is 0 (answer now); given without a number (`?wait`), the
    longest wait; a number of seconds is capped at MAX_WAIT_S."""
    if text is None:
        return 0.0
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return float(min(int(text), MAX_WAIT_S))
    return float(MAX_WAIT_S)


# --- the JSON shapes of Sawtooth's REST API for blocks, batches and transactions ------------------
# Headers are given decoded (as Sawtooth's REST API does), byte fields in base64.


def transaction_json(t: Transaction) -> dict[str, Any]:
    h = TransactionHeader.FromString(t.header)
    return {
        "header": {
            "batcher_public_key": h.batcher_public_key,
            "dependencies": list(h.dependencies),
            "family_name": h.family_name,
            "family_version": h.family_version,
            "inputs": list(h.inputs),
            "nonce": h.nonce,
            "outputs": list(h.outputs),
            "payload_sha512": h.payload_sha512,
            "signer_public_key": h.signer_public_key,
        },
        "header_signature": t.header_signature,
        "payload": base64.b64encode(t.payload).decode(),
    }


def batch_json(b: Batch) -> dict[str, Any]:
    h = BatchHeader.FromString(b.header)
    return {
        "header": {"signer_public_key": h.signer_public_key, "transaction_ids": list(h.transaction_ids)},
        "header_signature": b.header_signature,
        "trace": b.trace,
        "transactions": [transaction_json(t) for t in b.transactions],
    }


def block_json(num: int, block_id: str, previous: str, root: str, batches: list[Batch]) -> dict[str, Any]:
    """A ledger block as a Sawtooth block (docs/sawtooth.md, "Blocks"): its Sawtooth batches, its
    height as `block_num` (a string, as protobuf's JSON mapping writes a uint64), its ledger hash as
    the id, the ledger's Merkle root of the block's results as `state_root_hash`; no block signer
    (a block here is vouched for by the quorum's commit signatures, not by one key)."""
    return {
        "header": {
            "batch_ids": [b.header_signature for b in batches],
            "block_num": str(num),
            "consensus": "",
            "previous_block_id": previous,
            "signer_public_key": "",
            "state_root_hash": root,
        },
        "header_signature": block_id,
        "batches": [batch_json(b) for b in batches],
    }
