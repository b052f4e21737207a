"""The intkey TP of examples/sawtooth, except that every value it writes is one more than intkey's
rules say: the executor it serves computes another state than its peers, as a buggy or tampered
TP would make it. Runs on the Sawtooth SDK's Python, like the example: `python THIS ENDPOINT`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "sawtooth"))

import cbor
import intkey_tp
from sawtooth_sdk.processor.core import TransactionProcessor


class _OffByOne:
    """A context that writes every intkey value plus one."""

    def __init__(self, context):
        self.context = context

    def get_state(self, addresses):
        return self.context.get_state(addresses)

    def set_state(self, entries):
        changed = {a: cbor.dumps({n: v + 1 for n, v in cbor.loads(d).items()}) for a, d in entries.items()}
        return self.context.set_state(changed)


class DivergingHandler(intkey_tp.IntkeyHandler):
    def apply(self, transaction, context):
        super().apply(transaction, _OffByOne(context))


if __name__ == "__main__":
    processor = TransactionProcessor(url=sys.argv[1])
    processor.add_handler(DivergingHandler())
    try:
        processor.start()
    except KeyboardInterrupt:
        pass
    finally:
        processor.stop()
