"""The JSON values a transaction may carry: the value domain, defined once for every component.

The SDK and CLI check values before they sign, the gateway refuses a transaction outside the
domain with a 400 naming the reason, and every executor applies the same check in the shared
parser (`conclavium.tx`: to clear operations when it parses the body, to sealed operations once it
has opened them) and records the transaction Invalid with the same reason. The executors cannot
rely on the gateway: the sequencer orders whatever it is given. Everything inside the domain is
encoded by `canonical_json` (the bytes write digests hash) on every executor, the same way, so no
value can make one fail.

The domain (I-JSON, RFC 7493, with limits):

- `null`, `true`, `false`;
- integers from -(2**53 - 1) to 2**53 - 1. I-JSON's range rather than signed 64-bit: every JSON
  reader (JavaScript's numbers, Go's and many others' default float64) reads these exactly, so a
  client or auditor who displays a value or recomputes a write digest sees the number the ledger
  holds. A larger integer (a 256-bit amount, a 64-bit id) travels as a string, as I-JSON advises;
- finite floating-point numbers (JSON has no NaN or infinity, and a literal beyond the double
  range is refused by the parser);
- strings of Unicode scalar values (no lone surrogates), object keys included;
- arrays, and objects whose keys are strings;
- at most `MAX_DEPTH` arrays or objects nested in one another (the value itself counts);
- in size, bounded by the transaction body (`conclavium.tx.MAX_TX_BYTES`, 64 KiB): clear
  operations are part of the body, and sealed operations open to fewer bytes than their
  ciphertext.
"""

from __future__ import annotations

import math
from typing import Any

MAX_INT = 2**53 - 1
MIN_INT = -MAX_INT
MAX_DEPTH = 64

# Machine-readable reasons (also the `reason` of an Invalid transaction and the gateway's `code`).
INT_OUT_OF_RANGE = "int_out_of_range"
FLOAT_NOT_FINITE = "float_not_finite"
INVALID_STRING = "invalid_string"
TOO_DEEP = "too_deep"
INVALID_VALUE = "invalid_value"

# Always the same words: a too-deep value may be refused by the JSON decoder's own recursion guard
# or by `check`, and executors must record the same reason either way.
TOO_DEEP_MESSAGE = f"values may nest at most {MAX_DEPTH} arrays or objects"
INT_OUT_OF_RANGE_MESSAGE = "integers must lie within ±(2**53 - 1); send larger ones as strings"


class ValueDomainError(ValueError):
    """A value outside the domain; `code` is one of the reasons above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Refused(Exception):
    """Raised inside the walk; the path to the offending part is collected on the way out."""

    def __init__(self, code: str, what: str) -> None:
        self.code = code
        self.what = what
        self.path: list[str] = []


def check(value: Any, where: str = "value") -> None:
    """Raise ValueDomainError naming the first part of `value` outside the domain (`where` names
    the value in the message)."""
    try:
        _check(value, MAX_DEPTH)
    except _Refused as r:
        if r.code == TOO_DEEP:
            raise ValueDomainError(TOO_DEEP, TOO_DEEP_MESSAGE) from None
        path = where + "".join(reversed(r.path))
        raise ValueDomainError(r.code, f"{path}: {r.what}") from None


def check_string(text: Any, where: str) -> None:
    """Raise ValueDomainError unless `text` is a string of Unicode scalar values."""
    if type(text) is not str:
        raise ValueDomainError(INVALID_VALUE, f"{where}: must be a string")
    if not _valid_str(text):
        raise ValueDomainError(INVALID_STRING, f"{where}: {_BAD_STRING}")


_BAD_STRING = "a string must be valid Unicode (no lone surrogates)"


def _valid_str(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check(v: Any, room: int) -> None:
    t = type(v)
    if t is str:
        if not _valid_str(v):
            raise _Refused(INVALID_STRING, _BAD_STRING)
    elif t is int:
        if not MIN_INT <= v <= MAX_INT:
            raise _Refused(INT_OUT_OF_RANGE, INT_OUT_OF_RANGE_MESSAGE)
    elif v is None or t is bool:
        pass
    elif t is float:
        if not math.isfinite(v):
            raise _Refused(FLOAT_NOT_FINITE, "numbers must be finite")
    elif t is dict:
        if room == 0:
            raise _Refused(TOO_DEEP, TOO_DEEP_MESSAGE)
        for k, x in v.items():
            try:
                if type(k) is not str:
                    raise _Refused(INVALID_VALUE, "object keys must be strings")
                if not _valid_str(k):
                    raise _Refused(INVALID_STRING, _BAD_STRING)
                _check(x, room - 1)
            except _Refused as r:
                r.path.append(f"[{k[:32]!r}]" if type(k) is str else "")
                raise
    elif t is list or t is tuple:
        if room == 0:
            raise _Refused(TOO_DEEP, TOO_DEEP_MESSAGE)
        for i, x in enumerate(v):
            try:
                _check(x, room - 1)
            except _Refused as r:
                r.path.append(f"[{i}]")
                raise
    else:
        raise _Refused(INVALID_VALUE, f"{t.__name__} is not a JSON value")
