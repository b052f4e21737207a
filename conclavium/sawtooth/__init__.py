"""Hyperledger Sawtooth on the ledger: its wire format (`batch.py`) and signatures (`signing.py`).
The protobuf module in `pb/` is generated from `protos/sawtooth.proto` (the subset of Sawtooth 1.2's
messages the ledger speaks, with Sawtooth's field numbers) by scripts/gen-sawtooth-protos.sh.
"""

APP = "sawtooth"  # the application name of Sawtooth entries (`conclavium.apps`)
