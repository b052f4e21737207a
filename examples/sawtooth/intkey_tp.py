"""An intkey transaction processor: the Sawtooth SDK's unmodified processor runtime
(`sawtooth_sdk.processor.core.TransactionProcessor`, Python 3.9) with a handler for the Integer Key
family (intkey 1.0), written here from the family's specification because the SDK's own example
handler is not published as a package.

intkey 1.0: the payload is a CBOR map {"Verb": "set" | "inc" | "dec", "Name": str (1-20 chars),
"Value": int}; a name lives at address sha512("intkey")[:6] + sha512(name)[-64:], whose data is a
CBOR map {name: value} (names whose addresses collide share it). `set` creates a name, `inc`/`dec`
change an existing one; values stay within 0 .. 2**32 - 1.

    python intkey_tp.py tcp://127.0.0.1:4004
"""

import hashlib
import sys

import cbor
from sawtooth_sdk.processor.core import TransactionProcessor
from sawtooth_sdk.processor.exceptions import InternalError, InvalidTransaction
from sawtooth_sdk.processor.handler import TransactionHandler

FAMILY = "intkey"
PREFIX = hashlib.sha512(FAMILY.encode()).hexdigest()[:6]
MAX_VALUE = 2**32 - 1
MAX_NAME = 20


def address(name):
    return PREFIX + hashlib.sha512(name.encode()).hexdigest()[-64:]


class IntkeyHandler(TransactionHandler):
    family_name = FAMILY
    family_versions = ["1.0"]
    namespaces = [PREFIX]

    def apply(self, transaction, context):
        verb, name, value = decode(transaction.payload)
        addr = address(name)
        entries = context.get_state([addr])
        names = {}
        if entries:
            try:
                names = cbor.loads(entries[0].data)
            except Exception:
                raise InternalError(f"the state at {addr} is not CBOR") from None
        if verb == "set":
            if name in names:
                raise InvalidTransaction(f"Verb is 'set', but already exists: Name: {name}, Value {names[name]}")
            result = value
        else:
            if name not in names:
                raise InvalidTransaction(f"Verb is '{verb}' but Name is not in state: {name}")
            result = names[name] + value if verb == "inc" else names[name] - value
            if result > MAX_VALUE:
                raise InvalidTransaction(f"Verb is 'inc', but the result would be above {MAX_VALUE}")
            if result < 0:
                raise InvalidTransaction("Verb is 'dec', but the result would be below 0")
        names[name] = result
        context.set_state({addr: cbor.dumps(names)})


def decode(payload):
    try:
        content = cbor.loads(payload)
    except Exception:
        raise InvalidTransaction("the payload is not CBOR") from None
    if not isinstance(content, dict):
        raise InvalidTransaction("the payload is not a CBOR map")
    verb, name, value = content.get("Verb"), content.get("Name"), content.get("Value")
    if verb not in ("set", "inc", "dec"):
        raise InvalidTransaction(f"Verb must be set, inc or dec, not {verb!r}")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
        raise InvalidTransaction(f"Name must be a string of 1 to {MAX_NAME} characters")
    if type(value) is not int or not 0 <= value <= MAX_VALUE:
        raise InvalidTransaction(f"Value must be an integer from 0 to {MAX_VALUE}")
    return verb, name, value


def main():
    processor = TransactionProcessor(url=sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:4004")
    processor.add_handler(IntkeyHandler())
    try:
        processor.start()
    except KeyboardInterrupt:
        pass
    finally:
        processor.stop()


if __name__ == "__main__":
    main()
