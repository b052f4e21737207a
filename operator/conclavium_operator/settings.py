"""kopf settings the chart's contract relies on (docs/kubernetes.md, "Contract with the operator")."""

from __future__ import annotations

import logging

import kopf

FINALIZER = "conclavium.io/finalizer"
PREFIX = "conclavium.io"


def configure(settings: kopf.OperatorSettings) -> None:
    """Our finalizer name, kopf's progress and diff-base in annotations under conclavium.io (never in
    status: kopf 1.45 treats status.kopf as read-only), fewer Events, no silently stale watches."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 10
