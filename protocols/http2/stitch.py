"""Stitching: frames of interleaved streams are folded into per-stream accumulators; one exchange per
stream id once both sides ended (END_STREAM), or at RST_STREAM / a GOAWAY that refuses it."""

from __future__ import annotations

from collections import deque

from protocols.base import Direction, Timed
from protocols.http2.types import (
    CONTINUATION,
    DATA,
    GOAWAY,
    HEADERS,
    MAX_DONE,
    MAX_STREAMS,
    PUSH_PROMISE,
    RST_STREAM,
    H2Exchange,
    H2Frame,
    H2State,
    StreamAcc,
)

_BLOCK_KINDS = (HEADERS, CONTINUATION, PUSH_PROMISE)


def stitch(
    requests: deque[Timed[H2Frame]], responses: deque[Timed[H2Frame]], state: H2State
) -> list[H2Exchange]:
    out: list[H2Exchange] = []
    while requests:
        _apply(requests.popleft(), 0, state, out)
    while responses:
        _apply(responses.popleft(), 1, state, out)
    if state.eof[0] and state.eof[1] and state.streams:
        _flush_truncated(state, out)
        state.unmatched += len(state.streams)  # still open at the close: their other half never came
        state.streams.clear()
    return out


def take_unmatched(state: H2State) -> int:
    """Streams dropped unanswered since the last call (evicted, or open when the connection ended)."""
    n, state.unmatched = state.unmatched, 0
    return n


def on_eof(state: H2State, direction: Direction) -> None:
    state.eof[0 if direction is Direction.REQUEST else 1] = True


def _flush_truncated(state: H2State, out: list[H2Exchange]) -> None:
    """The connection ended: a stream whose END_STREAM lay in uncopied bytes is over, outcome unknown."""
    for acc in [a for a in state.streams.values() if a.truncated and a.req_blocks]:
        acc.degraded = True
        _emit(state, acc, None, False, out)


def on_gap(state: H2State, direction: Direction) -> None:
    """Bytes were lost: the HPACK table, a pending block and message framing can't be trusted."""
    d = 0 if direction is Direction.REQUEST else 1
    state.hpack[d].desync()
    state.pending[d] = None
    state.cursors[d].clear()
    for acc in state.streams.values():
        acc.degraded = True  # any of them may have lost frames


def _stream(state: H2State, sid: int, timed: Timed[H2Frame]) -> StreamAcc | None:
    acc = state.streams.get(sid)
    if acc is not None:
        return acc
    if sid in state.done or sid == 0:
        return None  # a stream id is never reused: late frames of a finished stream are ignored
    streams = state.streams
    if len(streams) >= MAX_STREAMS:
        del streams[next(iter(streams))]
        state.evicted += 1
        state.unmatched += 1
    acc = StreamAcc(sid, timed.start_ns, timed.end_ns)
    streams[sid] = acc
    return acc


def _apply(timed: Timed[H2Frame], d: int, state: H2State, out: list[H2Exchange]) -> None:
    f = timed.frame
    kind = f.kind
    if kind == DATA or kind in _BLOCK_KINDS:
        acc = _stream(state, f.stream_id, timed)
        if acc is None:
            return
        if timed.start_ns < acc.start_ns:
            acc.start_ns = timed.start_ns
        if timed.end_ns > acc.end_ns:
            acc.end_ns = timed.end_ns
        acc.truncated |= timed.truncated
        if kind == DATA:
            _data(acc, f, d)
            # A client stops reading once content-length bytes came: the END_STREAM may never be read.
            if d == 1 and acc.req_ended and 0 <= acc.resp_length <= acc.resp_body and not f.end_stream:
                _emit(state, acc, None, False, out)
                return
        elif f.headers is not None or not f.complete:
            if f.promised_id and kind != HEADERS:
                _promise(state, f, timed)
            else:
                _block(acc, f, d)
        if f.end_stream:
            if d == 0:
                acc.req_ended = True
            else:
                acc.resp_ended = True
            # A truncated stream's request END_STREAM may lie in bytes never copied: the response decides.
            if acc.resp_ended and (acc.req_ended or acc.truncated):
                _emit(state, acc, None, False, out)
    elif kind == RST_STREAM:
        acc = state.streams.get(f.stream_id)
        if acc is not None:
            acc.end_ns = max(acc.end_ns, timed.end_ns)
            # A reset after a complete response (RFC 9113 8.1: "stop sending") is no failure.
            _emit(state, acc, None if acc.resp_ended else f.error_code, False, out)
    elif kind == GOAWAY:
        _goaway(state, f, d, out)


def _data(acc: StreamAcc, f: H2Frame, d: int) -> None:
    if d == 0:
        acc.req_body += f.data_len
        if f.msg_count < 0:
            acc.req_msgs = None
        elif acc.req_msgs is not None:
            acc.req_msgs += f.msg_count
            acc.req_msg_bytes += f.msg_bytes
    else:
        acc.resp_body += f.data_len
        if f.msg_count < 0:
            acc.resp_msgs = None
        elif acc.resp_msgs is not None:
            acc.resp_msgs += f.msg_count
            acc.resp_msg_bytes += f.msg_bytes


def _block(acc: StreamAcc, f: H2Frame, d: int) -> None:
    headers = f.headers or ()
    if not f.complete:
        acc.degraded = True
    if d == 0:
        if acc.req_blocks == 0:
            acc.request_headers = headers
        acc.req_blocks += 1
        return
    if acc.resp_blocks == 0 or not acc.response_headers:
        status = _get(headers, ":status")
        if status is not None and status.startswith("1"):
            return  # an informational response: the final one follows
        acc.response_headers = headers
        length = _get(headers, "content-length")
        if length is not None and length.isdigit() and len(length) <= 18:
            acc.resp_length = int(length)
    else:
        acc.trailers = headers
    acc.resp_blocks += 1


def _promise(state: H2State, f: H2Frame, timed: Timed[H2Frame]) -> None:
    """A server push: the promised stream's request is the PUSH_PROMISE's header block."""
    pushed = _stream(state, f.promised_id, timed)
    if pushed is None:
        return
    pushed.request_headers = f.headers or ()
    pushed.req_blocks = 1
    pushed.req_ended = True
    pushed.pushed = True
    pushed.degraded |= not f.complete


def _goaway(state: H2State, f: H2Frame, d: int, out: list[H2Exchange]) -> None:
    """Streams the sender's peer opened above last_stream_id were never processed."""
    last = f.promised_id
    state.goaway_last = last
    parity = 1 if d == 1 else 0  # a server's GOAWAY refuses client (odd) streams, a client's pushes
    for acc in [a for sid, a in state.streams.items() if sid > last and sid & 1 == parity]:
        if not acc.resp_ended:
            _emit(state, acc, f.error_code or None, True, out)


def _emit(state: H2State, acc: StreamAcc, rst: int | None, refused: bool, out: list[H2Exchange]) -> None:
    sid = acc.stream_id
    state.streams.pop(sid, None)
    done = state.done
    if len(done) >= MAX_DONE:
        del done[next(iter(done))]
    done[sid] = None
    degraded = (
        acc.degraded
        or acc.req_blocks == 0  # joined after the request headers went by
        or (acc.resp_ended and acc.resp_blocks == 0)
    )
    out.append(
        H2Exchange(
            sid,
            acc.start_ns,
            acc.end_ns,
            acc.request_headers,
            acc.response_headers,
            acc.trailers,
            acc.req_body,
            acc.resp_body,
            acc.req_msgs,
            acc.resp_msgs,
            acc.req_msg_bytes,
            acc.resp_msg_bytes,
            rst,
            refused,
            degraded,
            acc.truncated,
            acc.pushed,
        )
    )


def _get(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    for key, value in headers:
        if key == name:
            return value
    return None
