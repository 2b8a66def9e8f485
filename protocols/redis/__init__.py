"""Redis serialization protocol, RESP2 and RESP3: commands (arrays and inline), every reply type,
pipelining, transactions, SELECT, HELLO 3, pub/sub and client-side-caching pushes."""

from __future__ import annotations

from protocols.base import Direction, ProtocolSpec
from protocols.redis.parse import detect, find_boundary, parse_frame
from protocols.redis.semconv import to_record
from protocols.redis.stitch import stitch, take_unmatched
from protocols.redis.types import Exchange, Frame, State


def on_gap(state: State, direction: Direction) -> None:
    """Lost bytes: a message being parsed in pieces and a pending subscription can't be trusted."""
    state.partial[0 if direction is Direction.REQUEST else 1] = None
    state.subscribing = None
    state.desynced = True


def on_eof(state: State, direction: Direction) -> None:
    """The connection ended: an UNSUBSCRIBE without channels has had all its confirmations."""
    state.eof = True


SPEC: ProtocolSpec[Frame, State, Exchange] = ProtocolSpec(
    name="redis",
    detect=detect,
    new_state=State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    exchange_position=lambda x: x.position,
    on_eof=on_eof,
    take_unmatched=take_unmatched,
)

__all__ = ["SPEC", "Exchange", "Frame", "State"]
