"""The OpenAPI 3.1 document served at `/openapi.json`.

Every operation is described here, keyed by (method, path) exactly as the gateway's router knows
it; `openapi_document` is built from the router's routes and refuses to build while one of them
has no entry (or an entry names no route), so a route cannot go undocumented. Every answer that
is not a success carries the `Error` body (docs/formats.md, "Gateway API errors")."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conclavium.cose import MAX_DOCUMENT_BYTES
from conclavium.governance.model import PROPOSAL_STATES
from conclavium.tx import MAP_NAME, MAX_KEY_LEN

from .limits import MAX_BATCH, MAX_HTTP_LINE

MAX_HEIGHT = 2**63 - 1  # the largest min_height a read may name: a 64-bit integer on its way to executors

BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
HEX64 = "^[0-9a-fA-F]{64}$"
# Custom string formats naming what a base64 field holds beyond JSON Schema's reach (a signed,
# canonical body; a COSE_Sign1 document): docs/formats.md describes each.
FMT_TX_BODY = "conclavium-tx-body"
FMT_QUERY_BODY = "conclavium-query-body"
FMT_COSE = "conclavium-cose-sign1"
FMT_NOTARY_BODY = "conclavium-notary-body"
FMT_NOTARY_QUERY = "conclavium-notary-query"

RETRY_AFTER = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 0}}
}
ALLOW = {"Allow": {"description": "The methods this path answers", "schema": {"type": "string"}}}
UNAVAILABLE = (
    "No executor answered, this gateway is not connected to NATS, or an executor is behind the newest commit "
    "(`no_executor`, `behind`); retry after Retry-After"
)
AHEAD = "min_height is beyond every commit this gateway has heard of (`ahead_of_ledger`)"
BUSY = (
    "The intake is unavailable (`intake_unavailable`) or too many transactions accepted here await commit "
    "(`overloaded`); retry after Retry-After"
)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref("Error")}}}
    if headers:
        out["headers"] = headers
    return out


def ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


MIN_HEIGHT_PARAM = {
    "name": "min_height",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_HEIGHT},
    "description": "Answer from a state at least this new (read-your-writes)",
}
E400_MIN_HEIGHT = "Malformed min_height (`invalid_min_height`)"
SIGNED_READ = (
    "Every answer an executor gives carries `signed_read`: its signature over (ledger, height, request, "
    "answer) and its endorsement (docs/formats.md, Signed read answers)."
)
HASH_PARAM = path_param("hash", {"type": "string", "pattern": HEX64}, "Transaction hash (entry id), 64 hex digits")
PROPOSAL_PARAM = path_param("id", {"type": "string", "pattern": HEX64}, "Proposal id, 64 hex digits")
NODE_PARAM = path_param("id", {"type": "string", "pattern": HEX64}, "Node id, 64 hex digits")

E400_TX = (
    "Malformed transaction: `invalid_json`, `invalid_body`, `missing_field`, `invalid_encoding`, "
    "`unsupported_version`, `wrong_ledger`, `invalid_map`, `reserved_map`, `invalid_key`, "
    "`bad_signature` (only with the optional early signature check), or a value-domain code: `int_out_of_range`, "
    "`float_not_finite`, `invalid_string`, `too_deep`, `invalid_value` (docs/formats.md)"
)
E413 = "The body is too large (`too_large`), or a batch holds too many transactions (`too_many`)"
E415 = "The body's Content-Type is not one this operation takes (`unsupported_media_type`)"
E400_DOC = (
    "Not a governance document for this operation: `invalid_json`, `missing_field`, `invalid_document`, "
    "`wrong_document_type`, `missing_ledger`, `wrong_ledger`, `proposal_mismatch`, `invalid_proposal_id`"
)


def _document_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/cose": {
                "schema": {"type": "string", "format": "binary", "maxLength": MAX_DOCUMENT_BYTES},
                "description": "A COSE_Sign1 governance document (docs/formats.md), raw",
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["document"],
                    "properties": {
                        "document": {
                            "type": "string",
                            "format": FMT_COSE,
                            "contentEncoding": "base64",
                            "contentMediaType": "application/cose",
                        }
                    },
                }
            },
        },
    }


def _gov_post(summary: str, with_id: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "tags": ["governance"],
        "requestBody": _document_body(),
        "responses": {
            "202": ok("Durably accepted; its outcome is the proposal's state", ref("GovAccepted")),
            "400": err(E400_DOC),
            "413": err(E413),
            "415": err(E415),
            "503": err("The intake is unavailable (`intake_unavailable`); retry after Retry-After", RETRY_AFTER),
        },
    }
    if with_id:
        op["parameters"] = [PROPOSAL_PARAM]
    return op


def _endorsement_post() -> dict[str, Any]:
    op = _gov_post("Submit a member's signed endorsement of its node (node_endorsement)", with_id=False)
    op["parameters"] = [NODE_PARAM]
    op["responses"]["202"] = ok("Durably accepted; executed, it names the node's member", ref("EndorsementAccepted"))
    op["responses"]["400"] = err(E400_DOC + "; the document names another node (`node_mismatch`)")
    return op


def operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Every operation the gateway serves, keyed by (upper-case method, router path)."""
    tx_post = {
        "summary": "Submit one signed transaction",
        "tags": ["transactions"],
        "requestBody": json_body(ref("SignedTx")),
        "responses": {
            "202": ok("Durably accepted; poll the status", ref("TxAccepted")),
            "400": err(E400_TX),
            "413": err(E413),
            "415": err(E415),
            "503": err(BUSY, RETRY_AFTER),
        },
    }
    batch_post = {
        "summary": f"Submit up to {MAX_BATCH} signed transactions",
        "tags": ["transactions"],
        "requestBody": json_body(
            {
                "type": "object",
                "required": ["transactions"],
                "properties": {
                    "transactions": {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": ref("SignedTx")}
                },
            }
        ),
        "responses": {
            "202": ok("Durably accepted, in order", ref("TxBatchAccepted")),
            "400": err(E400_TX + "; the message names the transaction's index"),
            "413": err(E413),
            "415": err(E415),
            "503": err(BUSY, RETRY_AFTER),
        },
    }
    # JSON-RPC answers malformed calls inside a 200 answer, with JSON-RPC error codes: the schema
    # says only what the route itself refuses (a body that is neither an object nor an array).
    rpc_call = {"type": "object", "description": "a JSON-RPC 2.0 call: jsonrpc, method, params, id"}
    rpc_post = {
        "summary": "Ethereum JSON-RPC 2.0 (docs/ethereum.md): one call or a batch",
        "tags": ["ethereum"],
        "requestBody": json_body({"oneOf": [rpc_call, {"type": "array", "items": rpc_call}]}),
        "responses": {
            "200": ok(
                "JSON-RPC answers; errors are JSON-RPC errors with geth's codes and messages",
                {"oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}}]},
            ),
            "400": err(
                "The body is not JSON (`invalid_json`), or neither an object nor an array of objects "
                "(`invalid_request`)"
            ),
            "413": err(E413),
            "415": err(E415),
        },
    }
    rpc_socket = {
        "summary": "Ethereum JSON-RPC over WebSocket, with eth_subscribe newHeads and logs (docs/ethereum.md)",
        "tags": ["ethereum"],
        "responses": {
            "101": {"description": "Switching to the WebSocket protocol: JSON-RPC messages both ways"},
            "400": err("Not a WebSocket upgrade request (`websocket_required`): POST calls to /rpc"),
            "503": err("This gateway holds its most WebSockets (`too_many_sockets`)", RETRY_AFTER),
        },
    }
    return {
        ("POST", "/rpc"): rpc_post,
        ("GET", "/rpc"): rpc_socket,
        ("POST", "/v1/transactions"): tx_post,
        ("POST", "/v1/transactions/batch"): batch_post,
        ("GET", "/v1/transactions/{hash}"): {
            "summary": "Transaction status",
            "tags": ["transactions"],
            "parameters": [HASH_PARAM],
            "responses": {
                "200": ok("Status", ref("TxStatus")),
                "400": err("Malformed hash (`invalid_hash`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/transactions/{hash}/receipt"): {
            "summary": "Receipt of a committed transaction, verifiable offline",
            "tags": ["transactions"],
            "parameters": [HASH_PARAM],
            "responses": {
                "200": ok("Receipt (docs/formats.md, Receipts)", ref("Receipt")),
                "202": err("Not committed yet (`pending`, `catching_up`); retry after Retry-After", RETRY_AFTER),
                "400": err("Malformed hash (`invalid_hash`)"),
                "404": err("No committed transaction with this hash (`not_found`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/state/{map}/{key}"): {
            "summary": "Read a public map entry",
            "tags": ["state"],
            "parameters": [
                path_param("map", {"type": "string", "pattern": MAP_NAME.pattern}, "Map name"),
                path_param("key", {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN}, "Entry key"),
                MIN_HEIGHT_PARAM,
            ],
            "responses": {
                "200": ok("The entry", ref("Entry")),
                "400": err("Malformed map, key or min_height (`invalid_map`, `invalid_key`, `invalid_min_height`)"),
                "403": err("A private map (`private_map`): read it with POST /v1/queries"),
                "404": err("No such key (`not_found`)"),
                "409": err(AHEAD),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("POST", "/v1/queries"): {
            "summary": "Signed, sealed read (private maps)",
            "tags": ["state"],
            "requestBody": json_body(ref("SignedQuery")),
            "responses": {
                "200": ok("The answer, sealed to the query's reply key", ref("SealedReply")),
                "400": err(
                    "Malformed query: `invalid_json`, `invalid_body`, `missing_field`, `invalid_encoding`, "
                    "`unsupported_version`, `wrong_ledger`, `invalid_sealed_request`, `invalid_reply_key`, "
                    "`invalid_min_height`"
                ),
                "401": err("The caller is not who it says (`bad_signature`, `unknown_sender`, `stale_query`)"),
                "404": err("No entry readable by this caller (`not_found`)"),
                "409": err(AHEAD),
                "413": err(E413),
                "415": err(E415),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/service"): {
            "summary": "Service certificate, constitution, members, users, nodes",
            "tags": ["service"],
            "responses": {
                "200": ok("Service information", ref("ServiceInfo")),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/service/tx-key"): {
            "summary": "The transaction key, as each endorsed executor vouches for it (signed answers)",
            "description": (
                "Every executor's signed answer naming the ledger's current transaction key; a client "
                "seals only to a key that nodes of k distinct members of its consortium identity vouch for "
                "(docs/confidentiality.md). With `nonce` every answer covers it, so none recorded "
                "earlier can be replayed."
            ),
            "tags": ["service"],
            "parameters": [
                {
                    "name": "nonce",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{32,128}$"},
                    "description": "The client's fresh random value, which every vouch's signed request names",
                }
            ],
            "responses": {
                "200": ok("Vouches", ref("TxKeyVouches")),
                "400": err("Malformed nonce (`invalid_nonce`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/runtime"): {
            "summary": "What this gateway observes of the running nodes (untrusted; not ledger state)",
            "description": (
                "The active sequencer's lease holder and each executor's executed and committed height "
                "from its status events, for status displays such as the operator's node phases."
            ),
            "tags": ["service"],
            "responses": {"200": ok("Observed node progress", ref("RuntimeInfo"))},
        },
        ("POST", "/v1/gov/proposals"): _gov_post("Submit a signed proposal", with_id=False),
        ("POST", "/v1/gov/proposals/{id}/ballots"): _gov_post("Submit a signed ballot on a proposal", with_id=True),
        ("POST", "/v1/gov/proposals/{id}/withdraw"): _gov_post("Withdraw one's own proposal", with_id=True),
        ("GET", "/v1/gov/proposals"): {
            "summary": "Proposals, oldest first",
            "tags": ["governance"],
            "parameters": [
                {
                    "name": "state",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": list(PROPOSAL_STATES)},
                    "description": "Only proposals in this state",
                },
                MIN_HEIGHT_PARAM,
            ],
            "responses": {
                "200": ok("Proposals", ref("Proposals")),
                "400": err("Unknown state (`invalid_state`) or malformed min_height (`invalid_min_height`)"),
                "409": err(AHEAD),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/proposals/{id}"): {
            "summary": "One proposal",
            "tags": ["governance"],
            "parameters": [PROPOSAL_PARAM, MIN_HEIGHT_PARAM],
            "responses": {
                "200": ok("The proposal", ref("Proposal")),
                "400": err("Malformed proposal id (`invalid_proposal_id`) or min_height (`invalid_min_height`)"),
                "404": err("No such proposal (`not_found`)"),
                "409": err(AHEAD),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/constitution"): {
            "summary": "The constitution in force",
            "tags": ["governance"],
            "parameters": [MIN_HEIGHT_PARAM],
            "responses": {
                "200": ok("The constitution", {"type": "object"}),
                "400": err(E400_MIN_HEIGHT),
                "404": err("No constitution yet (`not_found`)"),
                "409": err(AHEAD),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/members"): {
            "summary": "Members and the service's state",
            "tags": ["governance"],
            "parameters": [MIN_HEIGHT_PARAM],
            "responses": {
                "200": ok("Members", ref("Members")),
                "400": err(E400_MIN_HEIGHT),
                "409": err(AHEAD),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/recovery"): {
            "summary": "Disaster recovery: the share set in force, or what a recovering executor waits for",
            "tags": ["governance"],
            "responses": {
                "200": ok("Recovery status (docs/recovery.md)", ref("RecoveryStatus")),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("POST", "/v1/gov/recovery-shares"): {
            "summary": "Submit a member's signed recovery share (sealed to the recovering executor)",
            "tags": ["governance"],
            "requestBody": _document_body(),
            "responses": {
                "202": ok("Durably accepted; its outcome is the transaction's status", ref("ShareAccepted")),
                "400": err(E400_DOC),
                "413": err(E413),
                "415": err(E415),
                "503": err("The intake is unavailable (`intake_unavailable`); retry after Retry-After", RETRY_AFTER),
            },
        },
        ("POST", "/v1/nodes/{id}/endorsement"): _endorsement_post(),
        ("GET", "/v1/nodes/{id}/attestation"): {
            "summary": "A node's attestation evidence and the claims verified from it",
            "tags": ["service"],
            "parameters": [NODE_PARAM],
            "responses": {
                "200": ok("Attestation", ref("NodeAttestation")),
                "400": err("Malformed node id (`invalid_node_id`)"),
                "404": err("No such node (`not_found`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/openapi.json"): {
            "summary": "This document",
            "tags": ["meta"],
            "responses": {"200": ok("OpenAPI 3.1", {"type": "object", "required": ["openapi", "paths"]})},
        },
        ("GET", "/healthz"): {
            "summary": "Liveness",
            "tags": ["meta"],
            "responses": {"200": ok("Alive", ref("Health"))},
        },
        ("GET", "/readyz"): {
            "summary": "Readiness: NATS connected, status cache reachable, an executor answers with a service",
            "tags": ["meta"],
            "responses": {"200": ok("Ready", ref("Health")), "503": ok("Not ready, with the reasons", ref("Health"))},
        },
        ("GET", "/metrics"): {
            "summary": "Prometheus metrics",
            "tags": ["meta"],
            "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        },
        **_notary_operations(),
        **_sawtooth_operations(),
    }


E400_NOTARY = (
    "Malformed request: `invalid_json`, `missing_field`, `invalid_encoding`, `invalid_body`, `unsupported_version`, "
    "`wrong_ledger`, `invalid_state_ref`, `duplicate_state`, `too_many_states`, `nothing_to_notarise`, "
    "`invalid_time_window`, `bad_signature` (only with the optional early signature check)"
)


def _notary_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """The notary's routes (services/gateway/protocols/notary.py; docs/notary.md)."""
    return {
        ("POST", "/v1/notary/requests"): {
            "summary": f"Submit one notarisation request, or a batch of up to {MAX_BATCH}",
            "tags": ["notary"],
            "requestBody": json_body(
                {
                    "anyOf": [
                        ref("SignedNotaryRequest"),
                        {
                            "type": "object",
                            "required": ["requests"],
                            "properties": {
                                "requests": {
                                    "type": "array",
                                    "minItems": 1,
                                    "maxItems": MAX_BATCH,
                                    "items": ref("SignedNotaryRequest"),
                                }
                            },
                        },
                    ]
                }
            ),
            "responses": {
                "202": ok(
                    "Durably accepted, in order; poll GET /v1/notary/requests/{hash}",
                    {"anyOf": [ref("NotaryAccepted"), ref("NotaryBatchAccepted")]},
                ),
                "400": err(E400_NOTARY + "; in a batch the message names the request's index"),
                "413": err(E413),
                "415": err(E415),
                "503": err(BUSY, RETRY_AFTER),
            },
        },
        ("GET", "/v1/notary/requests/{hash}"): {
            "summary": "A notarisation request's status: Committed (notarised) or Invalid with Corda's error",
            "tags": ["notary"],
            "parameters": [path_param("hash", {"type": "string", "pattern": HEX64}, "Request hash, 64 hex digits")],
            "responses": {
                "200": ok("Status", ref("NotaryStatus")),
                "400": err("Malformed hash (`invalid_hash`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("POST", "/v1/notary/who-consumed"): {
            "summary": "Which transaction consumed a state: a notary party's signed query, answered sealed to it",
            "tags": ["notary"],
            "requestBody": json_body(ref("SignedNotaryQuery")),
            "responses": {
                "200": ok("The answer, sealed to the query's reply key", ref("SealedReply")),
                "400": err(
                    "Malformed query: `invalid_json`, `missing_field`, `invalid_encoding`, `invalid_body`, "
                    "`unsupported_version`, `wrong_ledger`, `invalid_state_ref`, `invalid_reply_key`"
                ),
                "401": err(
                    "The caller is not a notary party, or not who it says (`unknown_party`, `bad_signature`, "
                    "`stale_query`)"
                ),
                "409": err(AHEAD),
                "413": err(E413),
                "415": err(E415),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
    }


def _sawtooth_ids(kind: str) -> dict[str, Any]:
    """The `id` query of Sawtooth's status and receipt reads: up to 100 ids of 128 hex digits."""
    return {
        "name": "id",
        "in": "query",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{128}(,[0-9a-f]{128}){0,99}$"},
        "description": f"{kind} ids, separated by commas",
    }


def _sawtooth_error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out = ok(description, ref("SawtoothError"))
    if headers:
        out["headers"] = headers
    return out


def _sawtooth_operations() -> dict[tuple[str, str], dict[str, Any]]:
    """Sawtooth's REST subset (services/gateway/protocols/sawtooth.py; docs/sawtooth.md): its own
    error bodies, `{"error": {"code": <int>, "title", "message"}}`, with Sawtooth's fixed codes."""
    unavailable = _sawtooth_error("No executor answered, or none runs Sawtooth yet (codes 15, 17)", RETRY_AFTER)
    address = {"type": "string", "pattern": "^[0-9a-f]{70}$"}
    return {
        ("POST", "/batches"): {
            "summary": "Submit a serialized Sawtooth BatchList (application/octet-stream)",
            "tags": ["sawtooth"],
            "requestBody": {
                "required": True,
                "content": {"application/octet-stream": {"schema": {"type": "string"}}},
            },
            "responses": {
                "202": ok(
                    "Durably accepted; `link` is the batches' /batch_statuses URL",
                    {"type": "object", "required": ["link"], "properties": {"link": {"type": "string"}}},
                ),
                "400": _sawtooth_error(
                    "Wrong content type (42), not decodable (35), no batches (34), or a batch breaks a header "
                    "rule (30: the message says which)"
                ),
                "413": err(E413),
                "503": {
                    "description": BUSY + "; or (a Sawtooth error, code 31) too many batches are held here until "
                    "their family's transaction processor registers",
                    "headers": RETRY_AFTER,
                    "content": {"application/json": {"schema": {"oneOf": [ref("Error"), ref("SawtoothError")]}}},
                },
            },
        },
        ("GET", "/batch_statuses"): {
            "summary": "Statuses of batches: COMMITTED, INVALID (with the transaction and why), PENDING, UNKNOWN",
            "tags": ["sawtooth"],
            "parameters": [
                _sawtooth_ids("Batch"),
                {
                    "name": "wait",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Seconds to wait while any is PENDING (at most 300; without a number, 300)",
                },
            ],
            "responses": {
                "200": ok("The statuses, in the order asked", ref("SawtoothBatchStatuses")),
                "400": _sawtooth_error("No ids (66), or an id that is not 128 hex digits (60)"),
                "503": unavailable,
            },
        },
        ("GET", "/state"): {
            "summary": "State entries under an address prefix, in address order, a page at a time",
            "tags": ["sawtooth"],
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string", "pattern": pattern}}
                for n, pattern in (
                    ("address", "^[0-9a-f]{0,70}$"),
                    ("start", "^[0-9a-f]{70}$"),
                    ("limit", "^(1000|[1-9][0-9]{0,2})$"),
                    ("head", "^[0-9a-f]{64}$"),
                )
            ],
            "responses": {
                "200": ok("A page of entries", ref("SawtoothStateList")),
                "400": _sawtooth_error("Invalid address prefix (62), limit (53) or paging (54)"),
                "404": _sawtooth_error("A head other than the current one (50)"),
                "503": unavailable,
            },
        },
        ("GET", "/state/{address}"): {
            "summary": "The data at one state address",
            "tags": ["sawtooth"],
            "parameters": [path_param("address", address, "A state address, 70 hex digits")],
            "responses": {
                "200": ok(
                    "The data, base64",
                    {
                        "type": "object",
                        "required": ["data", "head", "link"],
                        "properties": {k: {"type": "string"} for k in ("data", "head", "link")},
                    },
                ),
                "400": _sawtooth_error("Not a state address (62)"),
                "404": _sawtooth_error("No data at the address (75)"),
                "503": unavailable,
            },
        },
        **_sawtooth_chain_operations(unavailable),
    }


def _sawtooth_chain_operations(unavailable: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Sawtooth's reads of the chain: a block is a committed ledger block holding Sawtooth batches
    (docs/sawtooth.md, "Blocks"), its id the ledger block's hash (64 hex digits)."""
    obj = {"type": "object"}
    page = {
        "type": "object",
        "required": ["data", "head", "link", "paging"],
        "properties": {
            "data": {"type": "array", "items": obj},
            "head": {"type": "string"},
            "link": {"type": "string"},
            "paging": obj,
        },
    }
    one = {"type": "object", "required": ["data", "head", "link"], "properties": {"data": obj}}
    block_id = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
    resource_id = {"type": "string", "pattern": "^[0-9a-f]{128}$"}
    ops: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, one_kind, code, start in (
        ("blocks", "block", 70, "^0x[0-9a-f]{16}$"),
        ("batches", "batch", 71, "^[0-9a-f]{128}$"),
        ("transactions", "transaction", 72, "^[0-9a-f]{128}$"),
    ):
        ops[("GET", f"/{kind}")] = {
            "summary": f"Committed {kind}, newest block first, a page at a time",
            "tags": ["sawtooth"],
            "parameters": [
                {"name": n, "in": "query", "required": False, "schema": {"type": "string", "pattern": pattern}}
                for n, pattern in (("start", start), ("limit", "^(1000|[1-9][0-9]{0,2})$"), ("head", "^[0-9a-f]{64}$"))
            ],
            "responses": {
                "200": ok("A page", page),
                "400": _sawtooth_error("Invalid limit (53) or paging (54)"),
                "404": _sawtooth_error("A head other than the current one (50)"),
                "503": unavailable,
            },
        }
        ops[("GET", f"/{kind}/{{id}}")] = {
            "summary": f"One committed {one_kind}",
            "tags": ["sawtooth"],
            "parameters": [path_param("id", block_id if kind == "blocks" else resource_id, "Its id")],
            "responses": {
                "200": ok(f"The {one_kind}", one),
                "400": _sawtooth_error("Not an id (60)"),
                "404": _sawtooth_error(f"No committed {one_kind} has this id ({code})"),
                "503": unavailable,
            },
        }
    ops[("GET", "/receipts")] = {
        "summary": "Receipts of committed transactions: state changes, events, receipt data",
        "tags": ["sawtooth"],
        "parameters": [
            _sawtooth_ids("Transaction")
        ],
        "responses": {
            "200": ok("The receipts, in the order asked", {"type": "object", "required": ["data"]}),
            "400": _sawtooth_error("No ids (66), or an id that is not 128 hex digits (60)"),
            "404": _sawtooth_error("A transaction without a committed receipt (80)"),
            "503": unavailable,
        },
    }
    return ops


def _with_method_not_allowed(op: dict[str, Any]) -> dict[str, Any]:
    """Every path answers other methods with 405 and an `Allow` header (RFC 9110)."""
    return {**op, "responses": {**op["responses"], "405": err("Method not allowed (`method_not_allowed`)", ALLOW)}}


def undocumented(routes: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Routes without an entry, and entries without a route (HEAD is implied by GET)."""
    served = {(m.upper(), p) for m, p in routes if m.upper() != "HEAD"}
    ops = operations()
    missing = sorted(f"{m} {p}" for m, p in served - ops.keys())
    stale = sorted(f"{m} {p}" for m, p in ops.keys() - served)
    return missing, stale


def openapi_document(routes: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The document for exactly these (method, path) routes; raises ValueError when they and
    the operations described here differ."""
    routes = list(routes)
    missing, stale = undocumented(routes)
    if missing or stale:
        raise ValueError(f"OpenAPI document out of date: undocumented {missing}, documented but not served {stale}")
    ops = operations()
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(ops):
        paths.setdefault(path, {})[method.lower()] = _with_method_not_allowed(ops[(method, path)])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conclavium gateway",
            "version": "1",
            "description": (
                "Confidential consortium ledger API. Errors: docs/formats.md, Gateway API errors. A "
                f"request line or header field beyond {MAX_HTTP_LINE // 1024} KiB is refused by the HTTP "
                "layer with a plain-text 400, before any operation."
            ),
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


SCHEMAS: dict[str, Any] = {
    "RuntimeInfo": {
        "type": "object",
        "required": ["sequencer", "executors"],
        "properties": {
            "sequencer": {
                "type": ["object", "null"],
                "properties": {
                    "holder": {"type": ["string", "null"], "description": "name of the lease holder"},
                    "revision": {"type": "integer"},
                    "ttl_ms": {"type": ["integer", "null"]},
                },
            },
            "executors": {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "executed_height": {"type": "integer"},
                        "committed_height": {"type": "integer"},
                        "seen_seconds_ago": {"type": "number"},
                    },
                },
            },
        },
    },
    "SawtoothError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "title", "message"],
                "properties": {
                    "code": {"type": "integer", "description": "Sawtooth's fixed error code"},
                    "title": {"type": "string"},
                    "message": {"type": "string"},
                },
            }
        },
    },
    "SawtoothBatchStatuses": {
        "type": "object",
        "required": ["data", "link"],
        "properties": {
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "status", "invalid_transactions"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"enum": ["COMMITTED", "INVALID", "PENDING", "UNKNOWN"]},
                        "invalid_transactions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "message"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "message": {"type": "string"},
                                    "extended_data": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
            "link": {"type": "string"},
        },
    },
    "SawtoothStateList": {
        "type": "object",
        "required": ["data", "head", "link", "paging"],
        "properties": {
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["address", "data"],
                    "properties": {"address": {"type": "string"}, "data": {"type": "string"}},
                },
            },
            "head": {"type": "string"},
            "link": {"type": "string"},
            "paging": {"type": "object"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Machine-readable reason, snake_case"},
                    "message": {"type": "string", "description": "For people; may change"},
                },
            },
            "signed_read": ref("SignedRead"),
        },
    },
    "SignedRead": {
        "type": "object",
        "description": SIGNED_READ,
        "required": ["v", "ledger", "height", "request", "node", "signature", "signing_key", "endorsement"],
        "properties": {
            "v": {"const": 2},
            "ledger": {"type": "string"},
            "height": {"type": "integer", "description": "The height of the state the answer was read from"},
            "request": {"type": "string", "pattern": HEX64, "description": "SHA-256 of the request answered"},
            "node": {"type": "string", "pattern": HEX64, "description": "The answering node's key id"},
            "signature": {"type": "string", "pattern": BASE64, "contentEncoding": "base64"},
            "signing_key": {"type": "string", "description": "The answering node's signing key (PEM)"},
            "endorsement": {
                "type": "string",
                "contentEncoding": "base64",
                "description": "Its member's node endorsement (COSE_Sign1), checked against the consortium identity",
            },
        },
    },
    "SignedTx": {
        "type": "object",
        "required": ["body", "signature"],
        "properties": {
            "body": {
                "type": "string",
                "format": FMT_TX_BODY,
                "contentEncoding": "base64",
                "contentMediaType": "application/json",
                "description": "The canonical JSON transaction body (docs/formats.md, Transactions), base64",
            },
            "signature": {
                "type": "string",
                "pattern": BASE64,
                "contentEncoding": "base64",
                "description": "The sender's signature over the body's bytes, base64; executors verify it",
            },
        },
    },
    "SignedQuery": {
        "type": "object",
        "required": ["body", "signature"],
        "properties": {
            "body": {
                "type": "string",
                "format": FMT_QUERY_BODY,
                "contentEncoding": "base64",
                "contentMediaType": "application/json",
                "description": "The canonical JSON query body with its sealed request (docs/formats.md), base64",
            },
            "signature": {"type": "string", "pattern": BASE64, "contentEncoding": "base64"},
            "min_height": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_HEIGHT,
                "description": "Answer from a state at least this new",
            },
        },
    },
    "SealedReply": {
        "type": "object",
        "required": ["sealed"],
        "properties": {"sealed": {"type": "string", "contentEncoding": "base64"}, "signed_read": ref("SignedRead")},
    },
    "SignedNotaryRequest": {
        "type": "object",
        "required": ["body", "signature"],
        "properties": {
            "body": {
                "type": "string",
                "format": FMT_NOTARY_BODY,
                "contentEncoding": "base64",
                "contentMediaType": "application/json",
                "description": "The canonical JSON notarisation request body (docs/notary.md), base64",
            },
            "signature": {"type": "string", "pattern": BASE64, "contentEncoding": "base64"},
        },
    },
    "SignedNotaryQuery": {
        "type": "object",
        "required": ["body", "signature"],
        "properties": {
            "body": {
                "type": "string",
                "format": FMT_NOTARY_QUERY,
                "contentEncoding": "base64",
                "contentMediaType": "application/json",
                "description": "The canonical JSON who-consumed query body (docs/notary.md), base64",
            },
            "signature": {"type": "string", "pattern": BASE64, "contentEncoding": "base64"},
        },
    },
    "NotaryAccepted": {
        "type": "object",
        "required": ["request_hash"],
        "properties": {"request_hash": {"type": "string", "pattern": HEX64}},
    },
    "NotaryBatchAccepted": {
        "type": "object",
        "required": ["request_hashes"],
        "properties": {"request_hashes": {"type": "array", "items": {"type": "string", "pattern": HEX64}}},
    },
    "NotaryStatus": {
        "type": "object",
        "required": ["request_hash", "status"],
        "properties": {
            "request_hash": {"type": "string", "pattern": HEX64},
            "status": {"enum": ["Unknown", "Pending", "Committed", "Invalid"]},
            "height": {"type": "integer"},
            "index": {"type": "integer"},
            "reason": {"type": "string", "description": "Why it was refused, e.g. `conflict`, `time_window_invalid`"},
            "message": {"type": "string"},
            "error": {
                "type": "object",
                "description": "The refusal's detail: Corda's NotaryError.Conflict or "
                "TimeWindowInvalid (docs/notary.md)",
            },
        },
    },
    "TxAccepted": {
        "type": "object",
        "required": ["tx_hash"],
        "properties": {"tx_hash": {"type": "string", "pattern": HEX64}},
    },
    "TxBatchAccepted": {
        "type": "object",
        "required": ["tx_hashes"],
        "properties": {"tx_hashes": {"type": "array", "items": {"type": "string", "pattern": HEX64}}},
    },
    "EndorsementAccepted": {
        "type": "object",
        "required": ["node_id", "tx_hash"],
        "properties": {
            "node_id": {"type": "string", "pattern": HEX64},
            "tx_hash": {"type": "string", "pattern": HEX64},
        },
    },
    "GovAccepted": {
        "type": "object",
        "required": ["proposal_id", "tx_hash"],
        "properties": {
            "proposal_id": {"type": "string", "pattern": HEX64},
            "tx_hash": {"type": "string", "pattern": HEX64},
        },
    },
    "TxStatus": {
        "type": "object",
        "required": ["tx_hash", "status"],
        "properties": {
            "tx_hash": {"type": "string", "pattern": HEX64},
            "status": {"enum": ["Unknown", "Pending", "Committed", "Invalid"]},
            "height": {"type": "integer"},
            "index": {"type": "integer"},
            "reason": {"type": "string", "description": "Why it is Invalid, machine-readable"},
            "message": {"type": "string"},
        },
    },
    "Entry": {
        "type": "object",
        "required": ["map", "key", "value"],
        "properties": {
            "map": {"type": "string"},
            "key": {"type": "string"},
            "value": {},
            "signed_read": ref("SignedRead"),
        },
    },
    "Receipt": {
        "type": "object",
        "description": "docs/formats.md, Receipts",
        "required": ["v", "ledger", "height", "index", "tx_hash", "root", "block_hash", "quorum", "signatures"],
        "properties": {
            "v": {"type": "integer"},
            "ledger": {"type": "string"},
            "height": {"type": "integer"},
            "index": {"type": "integer"},
            "tx_hash": {"type": "string"},
            "root": {"type": "string"},
            "block_hash": {"type": "string"},
            "quorum": {"type": "integer"},
            "signatures": {"type": "array", "items": {"type": "object"}},
        },
    },
    "TxKeyVouches": {
        "type": "object",
        "required": ["vouches"],
        "properties": {
            "vouches": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["tx_key", "signed_read"],
                    "properties": {"tx_key": {"type": "object"}, "signed_read": ref("SignedRead")},
                },
            }
        },
    },
    "ServiceInfo": {
        "type": "object",
        "required": ["ledger", "members", "users", "nodes", "quorum", "height"],
        "properties": {
            "ledger": {"type": "string"},
            "service_cert": {"type": ["string", "null"]},
            "status": {"type": ["string", "null"]},
            "members": {"type": "array", "items": {"type": "object"}},
            "users": {"type": "array", "items": {"type": "object"}},
            "nodes": {"type": "array", "items": {"type": "object"}},
            "quorum": {"type": "integer"},
            "height": {"type": "integer"},
            "committed_height": {"type": "integer"},
            "time_ms": {"type": "integer", "description": "The ledger time of the executed tip (ms since the epoch)"},
            "member_threshold": {"type": "integer"},
            "consortium": {"type": ["object", "null"], "description": "The current consortium identity (untrusted)"},
            "signed_read": ref("SignedRead"),
        },
    },
    "Proposal": {
        "type": "object",
        "required": ["proposal_id", "state"],
        "properties": {
            "proposal_id": {"type": "string"},
            "state": {"enum": list(PROPOSAL_STATES)},
            "signed_read": ref("SignedRead"),
        },
    },
    "Proposals": {
        "type": "object",
        "required": ["proposals"],
        "properties": {"proposals": {"type": "array", "items": ref("Proposal")}, "signed_read": ref("SignedRead")},
    },
    "RecoveryStatus": {
        "type": "object",
        "required": ["state", "reason", "share_set"],
        "properties": {
            "state": {"enum": ["running", "opening", "waiting_for_shares"]},
            "reason": {"type": "string"},
            "ledger": {"type": "string"},
            "share_set": {"type": ["object", "null"]},
            "node": {"type": ["object", "null"]},
            "received": {"type": "array", "items": {"type": "string"}},
            "refused": {"type": "object"},
            "last": {},
        },
    },
    "ShareAccepted": {
        "type": "object",
        "required": ["tx_hash"],
        "properties": {"tx_hash": {"type": "string", "pattern": HEX64}},
    },
    "Members": {
        "type": "object",
        "required": ["members"],
        "properties": {
            "members": {"type": "array", "items": {"type": "object"}},
            "service": {},
            "signed_read": ref("SignedRead"),
        },
    },
    "NodeAttestation": {
        "type": "object",
        "required": ["node_id", "status"],
        "properties": {
            "node_id": {"type": "string"},
            "status": {"type": "string"},
            "evidence": {},
            "claims": {},
            "policy_failures": {
                "type": "array",
                "description": "what the current node policy would refuse in the recorded evidence (drift)",
                "items": {"type": "object", "properties": {"check": {"type": "string"}, "message": {"type": "string"}}},
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"enum": ["ok", "ready", "not_ready"]}, "reason": {"type": "string"}},
    },
}
