"""Pair HTTP/1.x requests with responses in order (pipelining answers in request order)."""

from __future__ import annotations

from collections import deque
from typing import cast

from protocols.base import Timed

from .types import MAX_INTERIM, Exchange, Http1Frame, Http1State, Passthrough, Request, Response

_new = tuple.__new__  # builds the Exchange NamedTuple without its Python-level __new__
# One exchange's send and receive events, stamped by different threads, can be out of order by a
# little; a response starting more than this before a request cannot be its answer.
ORPHAN_SLACK_NS = 1_000_000


def stitch(
    requests: deque[Timed[Http1Frame]], responses: deque[Timed[Http1Frame]], state: Http1State
) -> list[Exchange]:
    """Pops matched frames; a response names the request it answers by `seq` (-1: match by time)."""
    out: list[Exchange] = []
    while True:
        while requests and type(requests[0].frame) is Passthrough:
            requests.popleft()
        while responses and type(responses[0].frame) is Passthrough:
            responses.popleft()
        if not responses:
            break
        timed_resp = responses[0]
        resp = timed_resp.frame
        if type(resp) is not Response:  # not ours: never let it block the queue
            responses.popleft()
            continue
        status = resp.status
        if 100 <= status < 200 and status != 101:  # 100 Continue / 103 Early Hints: the exchange goes on
            responses.popleft()
            if len(state.interim) < MAX_INTERIM:
                state.interim.append(status)
            continue
        if not requests:
            break
        req = requests[0].frame
        if type(req) is not Request:
            requests.popleft()
            continue
        if timed_resp.start_ns < requests[0].start_ns - ORPHAN_SLACK_NS:
            # It answers a request never seen (the capture joined mid-way). The parser gave it the seq
            # of the oldest request it had, shifting the queued responses by one: match those by time.
            state.answered = max(state.answered, max(_seq(r.frame) for r in responses))
            responses.popleft()
            state.unmatched += 1
            state.interim.clear()
            continue
        known = resp.seq > state.answered  # else parsed before its request was, or a stale method entry
        if known:
            if req.seq < resp.seq:  # this request's response was lost
                requests.popleft()
                state.unmatched += 1
                continue
            if req.seq > resp.seq:  # this response's request was lost or evicted
                responses.popleft()
                state.interim.clear()
                state.unmatched += 1
                continue
        else:  # unknown request (after a gap): answer the latest request sent before the response
            while len(requests) > 1 and _sent_before(requests[1], timed_resp):
                requests.popleft()
                state.unmatched += 1
        timed_req = requests.popleft()
        responses.popleft()
        interim = state.interim
        out.append(_new(Exchange, (timed_req, timed_resp, tuple(interim) if interim else (), not known)))
        if interim:
            interim.clear()
        # Methods queued for requests already answered would misframe the next responses: drop them.
        # not req's: after a gap the loop above may have skipped to a later one (a Request: _sent_before)
        seq = cast(Request, timed_req.frame).seq
        if seq > state.answered:
            state.answered = seq
        pending = state.pending
        while pending and pending[0][0] <= state.answered:
            pending.popleft()
    return out


def take_unmatched(state: Http1State) -> int:
    """Requests and responses stitch dropped unpaired (their other half was lost) since the last call."""
    n, state.unmatched = state.unmatched, 0
    return n


def _seq(frame: Http1Frame) -> int:
    return frame.seq if type(frame) is Response else -1


def _sent_before(request: Timed[Http1Frame], response: Timed[Http1Frame]) -> bool:
    return isinstance(request.frame, Request) and request.start_ns <= response.start_ns
