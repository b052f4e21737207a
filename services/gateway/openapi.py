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

MAX_BATCH = 1000  # the gateway's batch bound (app.MAX_BATCH; a test keeps them equal)
MAX_HEIGHT = 2**63 - 1  # the largest min_height a read may name: a 64-bit integer on its way to executors

BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
HEX64 = "^[0-9a-fA-F]{64}$"
# Custom string formats naming what a base64 field holds beyond JSON Schema's reach (a signed,
# canonical body; a COSE_Sign1 document): docs/formats.md describes each.
FMT_TX_BODY = "conclavium-tx-body"
FMT_QUERY_BODY = "conclavium-query-body"
FMT_COSE = "conclavium-cose-sign1"

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
    return {
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
                {
                    "name": "min_height",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_HEIGHT},
                    "description": "Answer from a state at least this new (read-your-writes)",
                },
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
                }
            ],
            "responses": {
                "200": ok("Proposals", ref("Proposals")),
                "400": err("Unknown state (`invalid_state`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/proposals/{id}"): {
            "summary": "One proposal",
            "tags": ["governance"],
            "parameters": [PROPOSAL_PARAM],
            "responses": {
                "200": ok("The proposal", ref("Proposal")),
                "400": err("Malformed proposal id (`invalid_proposal_id`)"),
                "404": err("No such proposal (`not_found`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/constitution"): {
            "summary": "The constitution in force",
            "tags": ["governance"],
            "responses": {
                "200": ok("The constitution", {"type": "object"}),
                "404": err("No constitution yet (`not_found`)"),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
        ("GET", "/v1/gov/members"): {
            "summary": "Members and the service's state",
            "tags": ["governance"],
            "responses": {
                "200": ok("Members", ref("Members")),
                "503": err(UNAVAILABLE, RETRY_AFTER),
            },
        },
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
    }


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
            "description": "Confidential consortium ledger API. Errors: docs/formats.md, Gateway API errors.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }


SCHEMAS: dict[str, Any] = {
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
            }
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
        "properties": {"sealed": {"type": "string", "contentEncoding": "base64"}},
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
        "properties": {"map": {"type": "string"}, "key": {"type": "string"}, "value": {}},
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
        },
    },
    "Proposal": {
        "type": "object",
        "required": ["proposal_id", "state"],
        "properties": {"proposal_id": {"type": "string"}, "state": {"enum": list(PROPOSAL_STATES)}},
    },
    "Proposals": {
        "type": "object",
        "required": ["proposals"],
        "properties": {"proposals": {"type": "array", "items": ref("Proposal")}},
    },
    "Members": {
        "type": "object",
        "required": ["members"],
        "properties": {"members": {"type": "array", "items": {"type": "object"}}, "service": {}},
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
