"""Which node keys the consortium identity vouches for: the one check every verifier of a node's
signature makes (receipts, signed read answers, and through them the notary's look-ups).

A signer presents its node id, its signing key and the endorsement of that key by one member (a
COSE_Sign1 document, `conclavium.consortium`). The trust anchor is the consortium identity the
verifier was handed: the endorsement must be signed by one of its members, for its ledger, name
this very key, and the node must not be retired at the height the signature is about; when the
verifier names a time (a receipt's ledger time), the endorsement must be valid then. No node's
secrets (node key, ledger secrets, the service key) can mint such an endorsement.
"""

from __future__ import annotations

from dataclasses import dataclass

from conclavium.consortium import Identity, IdentityError, read_node_endorsement
from conclavium.crypto.keys import KeyError_, PublicKey
from conclavium.encoding import b64d

NOT_COUNTED = ("unknown_member", "retired", "endorsement_not_yet_valid", "endorsement_expired")
"""Codes of a node the identity does not vouch for, although nothing was tampered with: a receipt
skips such a signer (others may still make the count); a read answer is refused."""


class EndorsementError(ValueError):
    """Why a node key is not endorsed under the identity; `code` is machine-readable:
    `unknown_member` (endorsed by someone not a member of this identity), `retired` (the identity
    retired the node before this height), `endorsement_not_yet_valid` / `endorsement_expired` (the
    endorsement's validity does not hold the time asked about), `bad_endorsement`, `wrong_ledger`,
    `wrong_node`, `malformed`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


@dataclass(frozen=True)
class Endorsed:
    key: PublicKey
    member: str  # the member (key id) whose endorsement counts for this node


def endorsed_node_key(
    node: str, signing_key: str, endorsement: str, identity: Identity, height: int, at_ms: int | None = None
) -> Endorsed:
    """The key of node `node` and its member, if `endorsement` (base64 COSE) is a member of
    `identity` endorsing `signing_key` (PEM) for the identity's ledger, the node is not retired
    at `height` and, with `at_ms` (milliseconds since the epoch), the endorsement is valid then
    (not_before <= at < not_after); else EndorsementError."""
    try:
        key = PublicKey.load(signing_key)
        doc = read_node_endorsement(b64d(endorsement), identity.members, identity.ledger)
    except IdentityError as e:
        raise EndorsementError(e.code, e.message) from None
    except (ValueError, KeyError_) as e:
        raise EndorsementError("malformed", f"signing key or endorsement: {e}") from None
    if doc.node != node or key.key_id != node or doc.signing_key.key_id != key.key_id:
        raise EndorsementError("wrong_node", "the endorsement is for another node key")
    if not identity.counts(node, height):
        raise EndorsementError("retired", f"retired after height {identity.retired[node]}")
    if at_ms is not None and at_ms < doc.not_before * 1000:
        message = f"endorsed from {doc.not_before}, not yet at {at_ms // 1000}"
        raise EndorsementError("endorsement_not_yet_valid", message)
    if at_ms is not None and at_ms >= doc.not_after * 1000:
        message = f"the endorsement expired at {doc.not_after}, before {at_ms // 1000}"
        raise EndorsementError("endorsement_expired", message)
    return Endorsed(key, doc.member)
