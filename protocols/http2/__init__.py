"""HTTP/2 (h2 and h2c) and gRPC: one spec, records are "grpc" for application/grpc*, else "http"."""

from protocols.base import ProtocolSpec
from protocols.http2.parse import detect, find_boundary, parse_frame
from protocols.http2.semconv import to_record
from protocols.http2.stitch import on_eof, on_gap, stitch, take_unmatched
from protocols.http2.types import H2Exchange, H2Frame, H2State

SPEC: ProtocolSpec[H2Frame, H2State, H2Exchange] = ProtocolSpec(
    name="http2",
    detect=detect,
    new_state=H2State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    ordered=False,  # streams are matched by id, not by order
    exchange_position=lambda x: x.stream_id,
    on_eof=on_eof,
    take_unmatched=take_unmatched,
)

__all__ = ["SPEC", "H2Exchange", "H2Frame", "H2State"]
