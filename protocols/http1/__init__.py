"""HTTP/1.0 and HTTP/1.1: keep-alive, pipelining, chunked, 1xx, Upgrade/CONNECT tunnels."""

from __future__ import annotations

from protocols.base import ProtocolSpec

from .parse import cut_frame, detect, find_boundary, on_eof, on_gap, parse_frame
from .semconv import to_record
from .stitch import stitch, take_unmatched
from .types import Exchange, Http1Frame, Http1State, Passthrough, Request, Response

SPEC: ProtocolSpec[Http1Frame, Http1State, Exchange] = ProtocolSpec(
    name="http1",
    detect=detect,
    new_state=Http1State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    ordered=True,
    exchange_position=lambda x: x.request.position,
    on_eof=on_eof,
    cut_frame=cut_frame,
    take_unmatched=take_unmatched,
)

__all__ = ["SPEC", "Exchange", "Http1Frame", "Http1State", "Passthrough", "Request", "Response", "on_eof"]
