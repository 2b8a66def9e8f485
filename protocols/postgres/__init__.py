"""PostgreSQL frontend/backend protocol 3.0: simple and extended query, pipelining, COPY, login."""

from __future__ import annotations

from protocols.base import Direction, ProtocolSpec
from protocols.postgres.parse import detect, find_boundary, parse_frame
from protocols.postgres.semconv import to_record
from protocols.postgres.stitch import stitch, take_unmatched
from protocols.postgres.types import Exchange, Msg, State


def on_gap(state: State, direction: Direction) -> None:
    """Lost bytes: the answer in progress, the batch being assembled and an abort can't be trusted."""
    if state.progress is not None:  # the head request stays queued: its answer lost bytes
        state.progress.truncated = True
    state.aborted = False
    state.skipped.clear()
    if state.pending_error is not None:  # its Execute's answer can no longer be told apart
        state.pending_error = None
        state.unmatched += 1
    state.batch_start_ns = -1
    state.ssl_pending = False
    state.desynced = True


def on_eof(state: State, direction: Direction) -> None:
    """The server's side ended: an answer begun and never finished is recorded as far as it went."""
    if direction is Direction.RESPONSE:
        state.ended = True


SPEC: ProtocolSpec[Msg, State, Exchange] = ProtocolSpec(
    name="postgres",
    detect=detect,
    new_state=State,
    parse_frame=parse_frame,
    find_boundary=find_boundary,
    stitch=stitch,
    to_record=to_record,
    on_gap=on_gap,
    on_eof=on_eof,
    exchange_position=lambda x: x.position,
    take_unmatched=take_unmatched,
)

__all__ = ["SPEC", "Exchange", "Msg", "State"]
