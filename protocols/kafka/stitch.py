"""Pairing: responses come in request order on a connection, and each names its request's correlation id.

The correlation id is checked, so a lost or unparsed message never pairs the wrong two: requests passed
over by a later response lost theirs (counted unmatched), and a response naming no queued request is
dropped (counted). Produce with acks=0 is answered by nothing: it makes an exchange on its own.
"""

from __future__ import annotations

from collections import deque

from protocols.base import Timed
from protocols.kafka.types import PRODUCE, Exchange, Frame, State


def _unanswered(frame: Frame) -> bool:
    return frame.api_key == PRODUCE and frame.acks == 0


def stitch(reqs: deque[Timed[Frame]], resps: deque[Timed[Frame]], state: State) -> list[Exchange]:
    out: list[Exchange] = []
    while reqs:
        req = reqs[0]
        if _unanswered(req.frame):
            out.append(Exchange(reqs.popleft(), None))
            continue
        if not resps:
            break
        correlation = resps[0].frame.correlation_id
        if req.frame.correlation_id == correlation:
            out.append(Exchange(reqs.popleft(), resps.popleft()))
            continue
        if any(r.frame.correlation_id == correlation for r in reqs):
            while reqs[0].frame.correlation_id != correlation:  # their responses were lost
                skipped = reqs.popleft()
                if _unanswered(skipped.frame):
                    out.append(Exchange(skipped, None))
                else:
                    state.unmatched += 1
        else:  # the response to a request not seen (lost, or before the capture began)
            resps.popleft()
            state.unmatched += 1
    return out


def take_unmatched(state: State) -> int:
    n, state.unmatched = state.unmatched, 0
    return n
