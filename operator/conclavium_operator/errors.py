"""Retry signals shared by the reconcilers."""

from __future__ import annotations

import logging

import kopf


class Waiting(kopf.TemporaryError):
    """Not a failure: the reconciler waits for something outside (a vote, a node retiring) and checks again."""


class WaitingIsNotAFailure(logging.Filter):
    """kopf logs every TemporaryError as "Handler ... failed temporarily: ..." at ERROR, and posts a
    Warning Event for it. A `Waiting` (its message starts with "waiting for") is an ordinary wait, so
    its record is lowered to INFO: no failure in the logs, no Warning Event."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING and "failed temporarily: waiting for " in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True
