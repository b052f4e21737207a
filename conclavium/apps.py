"""Application names, and how a client entry names its application: defined here once.

A client entry of the key-value application is an entry of kind 0 (`Kind.TX`) whose data is the
transaction body. An entry of any other application is of kind 3 (`Kind.APP`) and its data is the
application's name, one zero byte, then the application's own payload; the signature is the
application's (its scheme is the application's too). The executor runs an entry with the
application of that name when the ledger runs it (a governance setting, `conclavium.rules`), and
refuses it Invalid `unknown_application` otherwise.
"""

from __future__ import annotations

import re

from conclavium.block import Entry, Kind

KV = "kv"  # the native key-value application (`conclavium.tx`)
NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
MAX_NAME = 32


class AppEntryError(ValueError):
    """The entry's data does not start with a valid application name."""


def app_entry(app: str, payload: bytes, signature: bytes) -> Entry:
    """The entry for `payload` of application `app` (kind 0 for key-value transactions)."""
    if app == KV:
        return Entry(Kind.TX, payload, signature)
    if not NAME.fullmatch(app):
        raise AppEntryError(f"invalid application name {app[:40]!r}")
    return Entry(Kind.APP, app.encode() + b"\x00" + payload, signature)


def split(entry: Entry) -> tuple[str, bytes]:
    """(application name, payload) of a client entry; AppEntryError if it names none validly."""
    if entry.kind == Kind.TX:
        return KV, entry.data
    head = entry.data[: MAX_NAME + 1]
    cut = head.find(b"\x00")
    name = head[:cut].decode("ascii", "replace") if cut > 0 else ""
    if not NAME.fullmatch(name):
        raise AppEntryError("the entry does not start with a valid application name")
    return name, entry.data[cut + 1 :]
