"""Pair HTTP/1.x requests with responses in order (pipelining answers in request order)."""

from __future__ import annotations

from collections import deque

from protocols.base import Timed

from .types import MAX_INTERIM, Exchange, Http1Frame, Http1State, Passthrough, Request, Response


def _drop_passthrough(frames: deque[Timed[Http1Frame]]) -> None:
    while frames and isinstance(frames[0].frame, Passthrough):
        frames.popleft()


def stitch(
    requests: deque[Timed[Http1Frame]], responses: deque[Timed[Http1Frame]], state: Http1State
) -> list[Exchange]:
    """Pops matched frames; a response names the request it answers by `seq` (-1: match by time)."""
    out: list[Exchange] = []
    while True:
        _drop_passthrough(requests)
        _drop_passthrough(responses)
        if not responses:
            break
        timed_resp = responses[0]
        resp = timed_resp.frame
        if not isinstance(resp, Response):  # not ours: never let it block the queue
            responses.popleft()
            continue
        if resp.interim:  # 100 Continue / 103 Early Hints: the exchange goes on
            responses.popleft()
            if len(state.interim) < MAX_INTERIM:
                state.interim.append(resp.status)
            continue
        if not requests:
            break
        req = requests[0].frame
        if not isinstance(req, Request):
            requests.popleft()
            continue
        known = resp.seq > state.answered  # else parsed before its request was, or a stale method entry
        if known:
            if req.seq < resp.seq:  # this request's response was lost
                requests.popleft()
                continue
            if req.seq > resp.seq:  # this response's request was lost or evicted
                responses.popleft()
                state.interim.clear()
                continue
        else:
            # Unknown request (after a gap): answer the latest request sent before the response.
            if timed_resp.start_ns < requests[0].start_ns:
                responses.popleft()
                state.interim.clear()
                continue
            while len(requests) > 1 and _sent_before(requests[1], timed_resp):
                requests.popleft()
        timed_req = requests.popleft()
        responses.popleft()
        out.append(
            Exchange(
                request=timed_req,  # type: ignore[arg-type]  # checked Request above
                response=timed_resp,  # type: ignore[arg-type]
                interim=tuple(state.interim),
                degraded=not known,
            )
        )
        state.interim.clear()
        _answered(state, timed_req.frame)
    return out


def _answered(state: Http1State, request: Http1Frame) -> None:
    """Methods queued for requests already answered would misframe the next responses: drop them."""
    if isinstance(request, Request) and request.seq > state.answered:
        state.answered = request.seq
    pending = state.pending
    while pending and pending[0][0] <= state.answered:
        pending.popleft()


def _sent_before(request: Timed[Http1Frame], response: Timed[Http1Frame]) -> bool:
    return isinstance(request.frame, Request) and request.start_ns <= response.start_ns
