"""Governance documents members signed offline, forwarded to the ledger verbatim.

In a consortium that is not a development one the operator holds no member key: a member signs
its proposal, ballot or withdrawal on its own machine (`conclavium gov propose FILE --sign-only
OUT`, ...) and hands the COSE_Sign1 document over in a ConfigMap labelled
`conclavium.io/governance-document: <Consortium name>` (key `document.cose`, in `binaryData`, or
in `data` as base64 text). The operator checks only what it must to route the document (its type,
the ledger it names), posts the exact bytes to the gateway, waits for the ledger's verdict and
writes it on the ConfigMap's annotations. It cannot change the document: the executors verify the
member's signature over it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import kopf

from conclavium import cose
from conclavium.governance.documents import DocumentRouteError, submission_path
from conclavium_operator.gateway import GatewayUnavailable, ProposalRefused
from conclavium_operator.kube import CONSORTIUMS
from conclavium_operator.metrics import DOCUMENTS_FORWARDED
from conclavium_operator.runtime import Runtime

DOCUMENT_LABEL = "conclavium.io/governance-document"  # value: the Consortium's name
DOCUMENT_KEY = "document.cose"
RESULT_ANNOTATION = "conclavium.io/result"  # Committed, Invalid or Refused
REASON_ANNOTATION = "conclavium.io/reason"
TX_ANNOTATION = "conclavium.io/tx-hash"
PROPOSAL_ANNOTATION = "conclavium.io/proposal"
FINAL_RESULTS = ("Committed", "Invalid", "Refused")


class DocumentProblem(Exception):
    """Why a handed-over document is not forwarded; `reason` is machine-readable (CamelCase)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass(frozen=True)
class HandedOver:
    document: bytes
    msg_type: str
    path: str  # where the gateway takes it


def document_bytes(config_map: dict[str, Any]) -> bytes:
    """The document's bytes from `binaryData` or `data` (base64 text, as `kubectl create
    configmap --from-file` cannot put binary into `data`)."""
    for field in ("binaryData", "data"):
        text = (config_map.get(field) or {}).get(DOCUMENT_KEY)
        if text is None:
            continue
        try:
            return base64.b64decode(str(text).strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DocumentProblem("DocumentNotBase64", f"{field}.{DOCUMENT_KEY} is not base64") from None
    raise DocumentProblem("DocumentMissing", f"the ConfigMap has no {DOCUMENT_KEY} in binaryData or data")


def check_document(document: bytes, ledger: str) -> HandedOver:
    """Route a document for the Consortium's `ledger`; the signature is the executors' to check."""
    if len(document) > cose.MAX_DOCUMENT_BYTES:
        raise DocumentProblem("DocumentTooLarge", f"a governance document has at most {cose.MAX_DOCUMENT_BYTES} bytes")
    try:
        parsed = cose.parse1(document)
        path = submission_path(parsed)
    except cose.CoseError as e:
        raise DocumentProblem("InvalidDocument", f"not a COSE_Sign1 governance document: {e}") from None
    except DocumentRouteError as e:
        raise DocumentProblem("InvalidDocument", str(e)) from None
    named = parsed.protected.get(cose.HDR_LEDGER)
    if named != ledger:
        raise DocumentProblem("WrongLedger", f"the document is signed for ledger {str(named)[:64]!r}, not {ledger!r}")
    return HandedOver(document, str(parsed.protected.get(cose.HDR_MSG_TYPE)), path)


def is_final(config_map: dict[str, Any]) -> bool:
    """Forwarded already (or refused): a ConfigMap is forwarded once; a new document is a new ConfigMap."""
    annotations = (config_map.get("metadata") or {}).get("annotations") or {}
    return annotations.get(RESULT_ANNOTATION) in FINAL_RESULTS


async def forward(rt: Runtime, config_map: dict[str, Any], patch: kopf.Patch, logger: Any) -> None:
    """Forward one handed-over document and write the ledger's verdict on the ConfigMap
    (annotations: result, reason, tx hash, proposal id). Transient trouble (no Consortium yet, the
    gateway unreachable) raises kopf.TemporaryError; everything else ends in a result."""
    if is_final(config_map):
        return
    meta = config_map["metadata"]
    consortium_name = (meta.get("labels") or {}).get(DOCUMENT_LABEL, "")
    consortium = await rt.k8s.get(CONSORTIUMS, meta["namespace"], consortium_name) if consortium_name else None
    if consortium is None:
        raise kopf.TemporaryError(f"Consortium {consortium_name!r} not found", delay=rt.cfg.retry_delay)
    ledger = str((consortium.get("spec") or {}).get("ledgerId") or "")
    annotations = patch.metadata.annotations
    try:
        handed = check_document(document_bytes(config_map), ledger)
    except DocumentProblem as p:
        annotations[RESULT_ANNOTATION], annotations[REASON_ANNOTATION] = "Refused", f"{p.reason}: {p.message}"
        DOCUMENTS_FORWARDED.labels("unknown", "Refused").inc()
        logger.warning("governance document %s refused: %s", meta["name"], p.message)
        return
    try:
        outcome = await rt.gateway.submit_document(handed.document, handed.path)
    except GatewayUnavailable as e:
        raise kopf.TemporaryError(str(e), delay=rt.cfg.retry_delay) from e
    except ProposalRefused as e:
        annotations[RESULT_ANNOTATION], annotations[REASON_ANNOTATION] = "Refused", str(e)
        DOCUMENTS_FORWARDED.labels(handed.msg_type, "Refused").inc()
        return
    annotations[TX_ANNOTATION] = outcome["tx_hash"]
    annotations[PROPOSAL_ANNOTATION] = outcome["proposal_id"]
    result = "Committed" if outcome["status"] == "Committed" else "Invalid"
    annotations[RESULT_ANNOTATION] = result
    if result == "Invalid":
        annotations[REASON_ANNOTATION] = f"{outcome.get('reason', 'invalid')}: {outcome.get('message', '')}".strip()
    DOCUMENTS_FORWARDED.labels(handed.msg_type, result).inc()
    logger.info("forwarded %s %s: %s (%s)", handed.msg_type, meta["name"], result, outcome["tx_hash"])
