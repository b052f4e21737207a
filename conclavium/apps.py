"""Application names, as entries carry them: defined here once for every component.

A client entry names the application that gives it meaning (`Entry.app` on the wire); the
executor runs it with the application of that name if the ledger runs it (a governance setting).
"""

from __future__ import annotations

import re

KV = "kv"  # the native key-value application (`conclavium.tx`)
DEFAULT = KV  # an entry that names none (every entry before applications were named)
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
