"""The one attribute-value encoder: which typed field an `AttrValue` goes in, for every exporter that
writes typed values (OTLP AnyValue bytes in otlp.py, the records topic's AttributeValue in
records_sink.py). JSON lines and the metrics SDK take the Python values as they are."""

from __future__ import annotations

from typing import Literal

from protocols.base import AttrValue

ValueField = Literal["string_value", "bool_value", "int_value", "double_value"]


def value_field(value: AttrValue) -> ValueField:
    """The oneof field (same names in OTLP's AnyValue and records.proto's AttributeValue) for a value:
    bool before int (bool is a subclass of int); anything not a number is written as a string."""
    if isinstance(value, str):  # the common case first
        return "string_value"
    if isinstance(value, bool):
        return "bool_value"
    if isinstance(value, int):
        return "int_value"
    if isinstance(value, float):
        return "double_value"
    return "string_value"


def typed(value: AttrValue) -> tuple[ValueField, AttrValue]:
    """(field, value as that field holds it): a value of no attribute type becomes its str()."""
    kind = value_field(value)
    return kind, (str(value) if kind == "string_value" and not isinstance(value, str) else value)
