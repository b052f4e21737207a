"""Children of the executor (the snapshot writer, the sealed-opener workers) end when it does.

A SIGKILLed executor (OOM, a node failure drill) otherwise leaves them running: a snapshot child
goes on writing into a data directory that is being wiped or already used by the executor's
successor, and pool workers wait for ever on a queue nobody feeds.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _resolve_prctl() -> Callable[..., int] | None:
    """Looked up at import, never in a forked child (dlopen there could wait on a lock that another
    thread held at the fork)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_prctl = _resolve_prctl()


def end_with_parent(parent: int) -> None:
    """Called first thing in a child: the kernel sends it SIGKILL when `parent` exits (Linux; the
    parent must be the process's main thread, as the executor's event loop is). If the parent is
    already gone, end now."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
