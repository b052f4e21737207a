"""Retry signals shared by the reconcilers."""

from __future__ import annotations

import kopf


class Waiting(kopf.TemporaryError):
    """Not a failure: the reconciler waits for something outside (a vote, a node retiring) and checks again."""
