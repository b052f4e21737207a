"""The value domain (`conclavium.values`), and the shared parser that applies it to clear and
sealed operations: what is accepted, what is refused, and with which reason."""

from __future__ import annotations

import math

import pytest

from conclavium import values
from conclavium.crypto.keys import PrivateKey
from conclavium.tx import MAX_TX_BYTES, TxError, make_body, opened_ops, parse_body


def _nested(depth: int, leaf: object = 1) -> object:
    v = leaf
    for i in range(depth):
        v = [v] if i % 2 else {"k": v}
    return v


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -1, values.MAX_INT, values.MIN_INT, 0.5, -0.0, 1e308, "", "ascii", "ünïcødé 😀",
        "\x00", [], {}, [1, "a", None, {"b": [2.5]}], {"": 1, "é": {"x": []}}, _nested(values.MAX_DEPTH),
        (1, 2),
    ],
)
def test_values_in_the_domain_pass(value: object) -> None:
    values.check(value)


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (2**53, values.INT_OUT_OF_RANGE),
        (-(2**53), values.INT_OUT_OF_RANGE),
        (10**23, values.INT_OUT_OF_RANGE),
        (math.inf, values.FLOAT_NOT_FINITE),
        (math.nan, values.FLOAT_NOT_FINITE),
        ("lone \udc00 surrogate", values.INVALID_STRING),
        ({"\ud800": 1}, values.INVALID_STRING),
        ({1: "int key"}, values.INVALID_VALUE),
        (b"bytes", values.INVALID_VALUE),
        ({1, 2}, values.INVALID_VALUE),
        (_nested(values.MAX_DEPTH + 1), values.TOO_DEEP),
        (_nested(5000), values.TOO_DEEP),
    ],
)
def test_values_outside_the_domain_are_refused_with_a_reason(value: object, code: str) -> None:
    with pytest.raises(values.ValueDomainError) as e:
        values.check(value)
    assert e.value.code == code and e.value.message


def test_the_message_names_where_the_value_is() -> None:
    with pytest.raises(values.ValueDomainError) as e:
        values.check({"a": [1, {"b": 2**60}]}, "ops[0].value")
    assert e.value.message.startswith("ops[0].value['a'][1]['b']: integers must lie within")
    with pytest.raises(values.ValueDomainError) as e:
        values.check(_nested(100))
    assert e.value.message == values.TOO_DEEP_MESSAGE, "too deep reads the same wherever it is found"


def _body(value_json: bytes) -> bytes:
    return (
        b'{"app":"kv","ledger":"l","nonce":"n","ops":[{"key":"k","map":"public:m","op":"put","value":'
        + value_json
        + b'}],"sender":"' + b"0" * 64 + b'","ts":1,"v":1}'
    )


@pytest.mark.parametrize(
    ("value_json", "code"),
    [
        (b"100000000000000000000000", "int_out_of_range"),
        (b"-9007199254740992", "int_out_of_range"),
        (b"1e400", "invalid_body"),
        (b'"\\udc00"', "invalid_body"),
        (b'{"a":' * 400 + b"1" + b"}" * 400, "too_deep"),
        (b"[" * 5000 + b"]" * 5000, "too_deep"),
        (b"[" * 30000 + b"]" * 30000, "too_deep"),
    ],
)
def test_the_parser_refuses_bodies_outside_the_domain(value_json: bytes, code: str) -> None:
    with pytest.raises(TxError) as e:
        parse_body(_body(value_json))
    assert e.value.code == code


def test_the_parser_accepts_the_edges() -> None:
    tx = parse_body(_body(b"[" * 64 + b"9007199254740991" + b"]" * 64))
    assert tx.ops is not None


def test_too_deep_gives_the_same_words_from_the_decoder_and_from_the_check() -> None:
    """Far beyond the limit the JSON decoder's recursion guard stops first, just beyond it the value
    check does: executors must record the same reason and message either way."""
    messages = set()
    for depth in (65, 300, 5000):
        with pytest.raises(TxError) as e:
            parse_body(_body(b"[" * depth + b"]" * depth))
        messages.add((e.value.code, e.value.message))
    assert messages == {("too_deep", values.TOO_DEEP_MESSAGE)}


def test_sealed_operations_are_held_to_the_same_domain() -> None:
    with pytest.raises(TxError) as e:
        opened_ops(b'[{"key":"k","map":"private","op":"put","value":18446744073709551616}]')
    assert e.value.code == "int_out_of_range"
    assert e.value.message == "a sealed operation is invalid (int_out_of_range)", "no sealed content in the message"
    with pytest.raises(TxError) as e:
        opened_ops(b'[{"key":"k","map":"private","op":"put","value":' + b"[" * 3000 + b"]" * 3000 + b"}]")
    assert e.value.code == "too_deep"


def test_the_sdk_refuses_to_build_what_the_ledger_would_refuse() -> None:
    key = PrivateKey.generate()
    with pytest.raises(TxError) as e:
        make_body("l", key.key_id, [{"op": "put", "map": "public:m", "key": "k", "value": 10**23}], 1)
    assert e.value.code == "int_out_of_range"
    with pytest.raises(TxError) as e:
        make_body("l", key.key_id, [{"op": "put", "map": "public:m", "key": "\udc00", "value": 1}], 1)
    assert e.value.code == "invalid_string"
    with pytest.raises(TxError) as e:
        make_body("l", key.key_id, [{"op": "put", "map": "public:m", "key": "k", "value": "x" * MAX_TX_BYTES}], 1)
    assert e.value.code == "too_large"


@pytest.mark.parametrize("ts", [b"100000000000000000000000", b"9007199254740992", b"-1"])
def test_the_header_timestamp_keeps_to_the_domain(ts: bytes) -> None:
    with pytest.raises(TxError) as e:
        parse_body(_body(b"1").replace(b'"ts":1', b'"ts":' + ts))
    assert e.value.code == "int_out_of_range"
