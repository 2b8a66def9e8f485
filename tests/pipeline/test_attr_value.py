"""One attribute-value encoder: OTLP spans and the records topic type every value the same way."""

from __future__ import annotations

import pytest
from opentelemetry.proto.common.v1 import common_pb2 as common

from pipeline.attr_value import typed, value_field
from pipeline.otlp import _any_value
from pipeline.records_sink import decode_record, encode_record
from protocols.base import ConnInfo, Endpoint, L7Record, Role

VALUES = [
    ("s", "GET"),
    ("empty", ""),
    ("i", 200),
    ("neg", -3),
    ("big", 2**62),
    ("f", 0.25),
    ("t", True),
    ("no", False),
]


@pytest.mark.parametrize(("key", "value"), VALUES, ids=[k for k, _ in VALUES])
def test_otlp_and_records_topic_use_the_same_field_and_value(key: str, value: object) -> None:
    kind = value_field(value)  # type: ignore[arg-type]
    assert (
        kind
        == {str: "string_value", int: "int_value", float: "double_value", bool: "bool_value"}[type(value)]
    )
    otlp = common.AnyValue.FromString(_any_value(value))  # type: ignore[arg-type]
    assert otlp.WhichOneof("value") == kind and getattr(otlp, kind) == value
    conn = ConnInfo("n/1/2/0", Endpoint("10.0.0.1", 80), Endpoint("10.0.0.2", 5000), Role.SERVER)
    rec = L7Record("http", Role.SERVER, "GET", 1, 2, conn, "m", None, {key: value}, record_id="r")  # type: ignore[dict-item]
    back = decode_record(encode_record(rec)).attributes[key]
    assert back == value and type(back) is type(value)


def test_a_value_of_no_attribute_type_is_written_as_its_text() -> None:
    assert typed(None) == ("string_value", "None")  # type: ignore[arg-type]
    assert common.AnyValue.FromString(_any_value(("a", 1))).string_value == "('a', 1)"  # type: ignore[arg-type]
