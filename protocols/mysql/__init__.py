"""MySQL / MariaDB client-server protocol (text and binary protocol, prepared statements)."""

from __future__ import annotations

from protocols.base import Direction, ProtocolSpec
from protocols.mysql.parse import detect, find_boundary, parse_frame
from protocols.mysql.semconv import to_record
from protocols.mysql.stitch import stitch
from protocols.mysql.types import Exchange, Packet, State


def on_gap(state: State, direction: Direction) -> None:
    """Lost bytes: a long packet's continuation and an in-flight response can no longer be trusted."""
    if direction is Direction.REQUEST:
        state.req_continues = False
    else:
        state.resp_continues = False
    state.desynced = True
    state.progress = None  # the framing loop drops queued frames on a gap


SPEC: ProtocolSpec[Packet, State, Exchange] = ProtocolSpec(
    name="mysql",
    detect=detect,
    new_state=State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    exchange_position=lambda x: x.position,
)

__all__ = ["SPEC", "Exchange", "Packet", "State"]
