"""Hyperledger Sawtooth on the ledger: its wire format (`batch.py`) and signatures (`signing.py`).
The protobuf module in `pb/` is generated from `protos/sawtooth.proto` (the subset of Sawtooth 1.2's
messages the ledger speaks, with Sawtooth's field numbers) by scripts/gen-sawtooth-protos.sh.
"""

APP = "sawtooth"  # the application name of Sawtooth entries (`conclavium.apps`)
# public key (hex) -> {"registered_at": height}: the signers governance registered (`sawtooth_register`);
# under `public:sys.`, where no key-value transaction may write
SIGNERS = "public:sys.sawtooth.signers"
SIGNERS_POLICY_KEY = "sawtooth_signers"  # in `public:gov.service`: "registered" (absent: the same) or "open"
SIGNER_POLICIES = ("registered", "open")
