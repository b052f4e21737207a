"""The OpenAPI 3.1 document served at `/openapi.json`."""

from __future__ import annotations

from typing import Any

BUSY = "Intake unavailable, or overloaded (too many transactions awaiting commit); retry after Retry-After"


def _err(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


HASH_PARAM = {"name": "hash", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Conclavium gateway", "version": "1", "description": "Confidential consortium ledger API"},
        "paths": {
            "/v1/transactions": {
                "post": {
                    "summary": "Submit one signed transaction",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignedTx"}}},
                    },
                    "responses": {
                        "202": _ok("Durably accepted; poll the status", "TxAccepted"),
                        "400": _err("Malformed transaction"),
                        "413": _err("Too large"),
                        "415": _err("Not JSON"),
                        "503": _err(BUSY),
                    },
                }
            },
            "/v1/transactions/batch": {
                "post": {
                    "summary": "Submit up to 1000 signed transactions",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["transactions"],
                                    "properties": {
                                        "transactions": {
                                            "type": "array",
                                            "maxItems": 1000,
                                            "items": {"$ref": "#/components/schemas/SignedTx"},
                                        }
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": _ok("Durably accepted", "TxBatchAccepted"),
                        "400": _err("Malformed"),
                        "413": _err("Too large"),
                        "503": _err(BUSY),
                    },
                }
            },
            "/v1/transactions/{hash}": {
                "get": {
                    "summary": "Transaction status",
                    "parameters": [HASH_PARAM],
                    "responses": {
                        "200": _ok("Status", "TxStatus"),
                        "400": _err("Malformed hash"),
                        "503": _err("No executor"),
                    },
                }
            },
            "/v1/transactions/{hash}/receipt": {
                "get": {
                    "summary": "Receipt of a committed transaction",
                    "parameters": [HASH_PARAM],
                    "responses": {
                        "200": _ok("Receipt, verifiable offline", "Receipt"),
                        "202": _err("Not committed yet (Retry-After)"),
                        "404": _err("Unknown transaction"),
                    },
                }
            },
            "/v1/state/{map}/{key}": {
                "get": {
                    "summary": "Read a public map entry",
                    "parameters": [
                        {"name": "map", "in": "path", "required": True, "schema": {"type": "string"}},
                        {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": _ok("Value", "Entry"),
                        "403": _err("Private map: use /v1/queries"),
                        "404": _err("No such key"),
                    },
                }
            },
            "/v1/queries": {
                "post": {
                    "summary": "Signed read (private maps)",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/SignedTx"}}},
                    },
                    "responses": {
                        "200": _ok("Value", "Entry"),
                        "401": _err("Bad signature or unknown caller"),
                        "404": _err("Nothing readable"),
                    },
                }
            },
            "/v1/service": {
                "get": {
                    "summary": "Service certificate, members, users, nodes",
                    "responses": {"200": {"description": "Service information"}},
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness",
                    "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}},
                }
            },
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Metrics"}}}},
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                        }
                    },
                },
                "SignedTx": {
                    "type": "object",
                    "required": ["body", "signature"],
                    "properties": {
                        "body": {
                            "type": "string",
                            "contentEncoding": "base64",
                            "description": "canonical JSON body (docs/formats.md)",
                        },
                        "signature": {"type": "string", "contentEncoding": "base64"},
                    },
                },
                "TxAccepted": {"type": "object", "properties": {"tx_hash": {"type": "string"}}},
                "TxBatchAccepted": {
                    "type": "object",
                    "properties": {"tx_hashes": {"type": "array", "items": {"type": "string"}}},
                },
                "TxStatus": {
                    "type": "object",
                    "properties": {
                        "tx_hash": {"type": "string"},
                        "status": {"enum": ["Unknown", "Pending", "Committed", "Invalid"]},
                        "height": {"type": "integer"},
                        "index": {"type": "integer"},
                        "reason": {"type": "string"},
                    },
                },
                "Entry": {
                    "type": "object",
                    "properties": {"map": {"type": "string"}, "key": {"type": "string"}, "value": {}},
                },
                "Receipt": {"type": "object", "description": "docs/formats.md#receipt"},
            }
        },
    }
