"""COSE_Sign1 against RFC 9052's structure, and every refusal path."""

from __future__ import annotations

import datetime

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from gov_harness import key

from conclavium import cose
from conclavium.crypto.keys import PrivateKey, PublicKey

HEADERS = {cose.HDR_MSG_TYPE: "proposal", cose.HDR_CREATED_AT: 1_700_000_000}


def resolver(*keys: PrivateKey):
    table = {k.key_id: k.public_key for k in keys}
    return lambda kid: table.get(kid)


@pytest.mark.parametrize(("alg", "alg_id"), [("Ed25519", -8), ("ES256", -7), ("ES384", -35)])
def test_structure_matches_rfc9052(alg: str, alg_id: int) -> None:
    k = key("cose-" + alg, alg)  # type: ignore[arg-type]
    payload = b'{"actions":[]}'
    doc = cose.sign1(payload, k, HEADERS)

    tagged = cbor2.loads(doc)
    assert isinstance(tagged, cbor2.CBORTag) and tagged.tag == 18
    protected_bstr, unprotected, body, signature = tagged.value
    assert unprotected == {} and body == payload
    protected = cbor2.loads(protected_bstr)
    assert protected[1] == alg_id
    assert protected[4] == k.key_id.encode()
    assert protected["conclavium.gov.msg.type"] == "proposal"
    assert protected["conclavium.gov.msg.created_at"] == 1_700_000_000

    # Sig_structure built by hand, RFC 9052 section 4.4: ["Signature1", protected, external_aad, payload]
    by_hand = cbor2.dumps(["Signature1", protected_bstr, b"", payload])
    assert by_hand[0] == 0x84  # array of 4
    assert k.public_key.verify(signature, by_hand)

    headers, out = cose.verify1(doc, resolver(k))
    assert out == payload and headers[cose.HDR_MSG_TYPE] == "proposal"


def _hand_built(k: PrivateKey, protected: dict, unprotected: dict | None = None, payload: bytes = b"x",
                tag: int = 18, sign_payload: bytes | None = None) -> bytes:
    pbytes = cbor2.dumps(protected)
    sig = k.sign(cbor2.dumps(["Signature1", pbytes, b"", payload if sign_payload is None else sign_payload]))
    return cbor2.dumps(cbor2.CBORTag(tag, [pbytes, unprotected or {}, payload, sig]))


def test_accepts_independently_built_message_with_text_kid() -> None:
    k = key("cose-hand")
    doc = _hand_built(k, {1: -8, 4: k.key_id, "extra": 1})
    headers, payload = cose.verify1(doc, resolver(k))
    assert payload == b"x" and headers["extra"] == 1


def _expect(doc: bytes, k: PrivateKey, match: str) -> None:
    with pytest.raises(cose.CoseError, match=match):
        cose.verify1(doc, resolver(k))


def test_rejects_wrong_or_missing_tag() -> None:
    k = key("cose-hand")
    _expect(_hand_built(k, {1: -8, 4: k.key_id}, tag=98), k, "tag 18, got tag 98")
    tagged = cbor2.loads(cose.sign1(b"x", k, HEADERS))
    _expect(cbor2.dumps(tagged.value), k, "tag 18, got tag none")


def test_rejects_non_bstr_protected() -> None:
    k = key("cose-hand")
    tagged = cbor2.loads(cose.sign1(b"x", k, HEADERS))
    protected_map = cbor2.loads(tagged.value[0])
    doc = cbor2.dumps(cbor2.CBORTag(18, [protected_map, {}, b"x", tagged.value[3]]))
    _expect(doc, k, "protected header must be a bstr")


def test_rejects_unknown_alg() -> None:
    k = key("cose-hand")
    _expect(_hand_built(k, {1: -257, 4: k.key_id}), k, "unknown alg -257")


def test_rejects_alg_in_unprotected() -> None:
    k = key("cose-hand")
    _expect(_hand_built(k, {1: -8, 4: k.key_id}, unprotected={1: -8}), k, "unprotected")
    _expect(_hand_built(k, {4: k.key_id}, unprotected={1: -8}), k, "unprotected")


def test_rejects_kid_mismatch_and_alg_mismatch() -> None:
    k, other = key("cose-hand"), key("cose-other")
    doc = cose.sign1(b"x", k, HEADERS)
    with pytest.raises(cose.CoseError, match="kid mismatch"):
        cose.verify1(doc, lambda kid: other.public_key)
    es = key("cose-es", "ES256")
    with pytest.raises(cose.CoseError, match="alg mismatch"):
        cose.verify1(_hand_built(es, {1: -8, 4: es.key_id}), resolver(es))


def test_rejects_unknown_kid() -> None:
    k = key("cose-hand")
    with pytest.raises(cose.CoseError, match="unknown signer key id"):
        cose.verify1(cose.sign1(b"x", k, HEADERS), lambda kid: None)


def test_rejects_trailing_bytes() -> None:
    k = key("cose-hand")
    _expect(cose.sign1(b"x", k, HEADERS) + b"\x00", k, "trailing bytes")


def test_rejects_bad_signature_altered_payload_and_forgery() -> None:
    k, mallory = key("cose-hand"), key("cose-mallory")
    _expect(_hand_built(k, {1: -8, 4: k.key_id}, payload=b"y", sign_payload=b"x"), k, "bad signature")
    forged = _hand_built(mallory, {1: -8, 4: k.key_id})  # claims k's kid, signed by mallory
    _expect(forged, k, "bad signature")
    tagged = cbor2.loads(cose.sign1(b"x", k, HEADERS))
    sig = bytearray(tagged.value[3])
    sig[0] ^= 1
    _expect(cbor2.dumps(cbor2.CBORTag(18, [*tagged.value[:3], bytes(sig)])), k, "bad signature")


def test_rejects_altered_protected_header() -> None:
    k = key("cose-hand")
    tagged = cbor2.loads(cose.sign1(b"x", k, HEADERS))
    protected = cbor2.loads(tagged.value[0])
    protected[cose.HDR_CREATED_AT] += 1
    doc = cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps(protected), *tagged.value[1:]]))
    _expect(doc, k, "bad signature")


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (b"\xff\x00", "not valid CBOR"),
        (cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"x", b"s"])), "protected header is empty"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8}), {}, None, b"s"])), "detached"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8}), {}, b"x"])), "array of 4"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps([1]), {}, b"x", b"s"])), "must encode a map"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8}), {}, b"x", b"s"])), "no kid"),
        (cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: -8, 2: [1], 4: b"k"}), {}, b"x", b"s"])), "crit"),
    ],
)
def test_rejects_malformed(doc: bytes, match: str) -> None:
    with pytest.raises(cose.CoseError, match=match):
        cose.verify1(doc, lambda kid: None)


def test_sign1_is_deterministic_for_ed25519_and_refuses_alg_override() -> None:
    k = key("cose-hand")
    assert cose.sign1(b"x", k, HEADERS) == cose.sign1(b"x", k, HEADERS)
    with pytest.raises(cose.CoseError):
        cose.sign1(b"x", k, {1: -7})


def test_certificate_identity_has_same_kid() -> None:
    k = key("cose-cert", "ES256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "member")])
    t = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(k.crypto_key.public_key())  # type: ignore[attr-defined]
        .serial_number(1)
        .not_valid_before(t)
        .not_valid_after(t + datetime.timedelta(days=1))
        .sign(k.crypto_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    pub = PublicKey.load(cert.public_bytes(serialization.Encoding.PEM))
    assert pub.key_id == k.key_id
    assert cose.verify1(cose.sign1(b"x", k, HEADERS), lambda kid: pub)[1] == b"x"
