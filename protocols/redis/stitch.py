"""Pairs commands with replies in order; pub/sub deliveries and RESP3 pushes are set aside, not paired.

Replies come in command order (pipelined or not), so the head reply answers the head command. The
exceptions: (P|S)(UN)SUBSCRIBE gets one confirmation per channel (a record per command, finished by
its last confirmation); pushed messages (RESP3 `>`, RESP2 "message"/"pmessage"/"smessage" arrays on
a subscribed connection) answer no command and are counted in `State.pushes`, never as unmatched.
"""

from __future__ import annotations

from collections import deque

from protocols.base import Timed
from protocols.redis.types import (
    ARRAY,
    BLOB_ERROR,
    ERROR,
    K_EMPTY,
    MESSAGES,
    PUSH,
    REPLY_OFF,
    REPLY_ON,
    REPLY_SKIP,
    SIMPLE,
    SUBSCRIPTIONS,
    Exchange,
    Frame,
    State,
    Subscribing,
)

_ERRORS = (ERROR, BLOB_ERROR)
_CONFIRMATIONS = (ARRAY, PUSH)


def stitch(reqs: deque[Timed[Frame]], resps: deque[Timed[Frame]], state: State) -> list[Exchange]:
    out: list[Exchange] = []
    while True:
        if resps:
            _drop_pushes(reqs, resps, state)
        if not reqs:
            return out
        req = reqs[0]
        f = req.frame
        if f.kind == K_EMPTY:  # "*0\r\n" or a blank inline line: redis-server answers nothing
            reqs.popleft()
            state.unmatched += 1
            continue
        if (state.replies_off or state.skip_next or f.sub == "REPLY") and _unanswered(f, state):
            reqs.popleft()  # the server sends nothing back for it: the record ends with the command
            x = Exchange(f.name, f.sub, f.elements, req.start_ns, req.end_ns, req.position, state.db,
                         truncated=req.truncated)  # fmt: skip
        elif f.name in SUBSCRIPTIONS:
            subscribed = _subscription(reqs, resps, state)
            if subscribed is None:
                return out
            x = subscribed
        else:
            if not resps:
                return out
            r = resps[0]
            if r.end_ns < req.start_ns:  # it answers a command never seen (joined mid-stream, or lost)
                resps.popleft()
                state.unmatched += 1
                continue
            reqs.popleft()
            if state.desynced and reqs and reqs[0].start_ns <= r.start_ns:
                # After lost bytes, a reply begun after the next command was sent: the head's own reply
                # was what got lost (as far as the times tell; a pipelining client looks the same).
                x = Exchange(f.name, f.sub, f.elements, req.start_ns, max(req.end_ns, reqs[0].start_ns),
                             req.position, state.db, truncated=True, degraded=True)  # fmt: skip
            else:
                resps.popleft()
                x = _exchange(req, r, state)
        if state.desynced:
            x.degraded = True
            state.desynced = False
        state.paired += 1
        out.append(x)


def _unanswered(f: Frame, state: State) -> bool:
    """Whether redis-server answers nothing to this command (CLIENT REPLY OFF/SKIP and what they
    silence); updates the modes."""
    if f.name == "CLIENT" and f.sub == "REPLY":
        if f.number == REPLY_ON:
            state.replies_off = state.skip_next = False
            return False  # answered: +OK
        if f.number == REPLY_OFF:
            state.replies_off = True
            return True
        if f.number == REPLY_SKIP:
            state.skip_next = not state.replies_off
            return True
    if state.skip_next:
        state.skip_next = False
        return True
    return state.replies_off


def _drop_pushes(reqs: deque[Timed[Frame]], resps: deque[Timed[Frame]], state: State) -> None:
    """Out-of-band messages at the head of the replies: they answer no command."""
    while resps:
        f = resps[0].frame
        if f.kind == PUSH:
            if reqs:
                head = reqs[0].frame.name
                if head in SUBSCRIPTIONS and f.name == head.lower():
                    return  # RESP3: a subscription's confirmation is a push
        elif state.monitor and f.kind == SIMPLE and not f.name:
            pass  # MONITOR's feed: "+<time> [<db> <client>] <command>", no reply to anything
        elif not (
            f.kind == ARRAY
            and f.name in MESSAGES
            and not state.resp3
            and (state.subscribed or (not reqs and state.paired == 0))  # joined a subscribed connection
        ):
            return
        else:
            state.subscribed = True
        resps.popleft()
        state.pushes += 1


def _exchange(req: Timed[Frame], r: Timed[Frame], state: State) -> Exchange:
    f, rf = req.frame, r.frame
    command = f.name
    error = rf.name if rf.kind in _ERRORS else ""
    x = Exchange(
        command,
        f.sub,
        f.elements,
        req.start_ns,
        max(r.end_ns, req.end_ns),
        req.position,
        state.db,
        error,
        rf.kind,
        req.truncated or r.truncated,
    )
    if command == "EXEC" or command == "DISCARD":
        if command == "EXEC" and not error and rf.kind == ARRAY and rf.elements >= 0 and state.multi_db:
            state.db = x.namespace = state.multi_db
        state.multi, state.multi_db = False, ""
    elif error:
        return x
    elif command == "SELECT" and f.number >= 0 and rf.kind == SIMPLE:
        if state.multi and rf.name == "QUEUED":
            state.multi_db = str(f.number)  # takes effect when EXEC runs the transaction
        elif rf.name == "OK":
            state.db = x.namespace = str(f.number)
    elif command == "MONITOR" and rf.kind == SIMPLE and rf.name == "OK":
        state.monitor = True
    elif command == "MULTI":
        state.multi, state.multi_db = True, ""
    elif command == "HELLO" and f.number in (2, 3):
        state.resp3 = f.number == 3
    elif command == "RESET":
        state.db, state.resp3, state.subscribed, state.multi, state.multi_db = "0", False, False, False, ""
        state.monitor = False
        x.namespace = "0"
    return x


def _subscription(reqs: deque[Timed[Frame]], resps: deque[Timed[Frame]], state: State) -> Exchange | None:
    """A (P|S)(UN)SUBSCRIBE and its confirmations (one per channel; UNSUBSCRIBE without channels: one
    per subscription held, until none is left or something else follows)."""
    req = reqs[0]
    f = req.frame
    word = f.name.lower()
    p = state.subscribing
    if p is None or p.position != req.position:
        p = state.subscribing = Subscribing(req.position, f.elements if f.elements > 0 else -1)
    error, reply, degraded = "", PUSH if state.resp3 else ARRAY, False
    while True:
        if resps:
            _drop_pushes(reqs, resps, state)
        if not resps:
            if p.seen and state.eof:
                degraded = p.left > 0
                break
            return None
        r = resps[0]
        rf = r.frame
        if p.seen == 0 and r.end_ns < req.start_ns:
            resps.popleft()
            state.unmatched += 1
            continue
        if rf.kind in _CONFIRMATIONS and rf.name == word:
            resps.popleft()
            p.seen += 1
            p.end_ns = r.end_ns
            p.truncated = p.truncated or r.truncated
            if not state.resp3 and rf.number >= 0:
                state.subscribed = rf.number > 0
            if p.left > 0:
                p.left -= 1
                if p.left == 0:
                    break
            elif rf.number == 0:
                break
            continue
        if p.seen == 0:  # no confirmation: an error (wrong arguments, NOPERM) or another reply answers it
            resps.popleft()
            p.end_ns = r.end_ns
            p.truncated = p.truncated or r.truncated
            reply = rf.kind
            error = rf.name if rf.kind in _ERRORS else ""
            break
        degraded = p.left > 0  # confirmations broke off (lost), or every subscription is gone
        break
    reqs.popleft()
    state.subscribing = None
    return Exchange(
        f.name,
        f.sub,
        f.elements,
        req.start_ns,
        max(p.end_ns, req.end_ns),
        req.position,
        state.db,
        error,
        reply,
        req.truncated or p.truncated,
        degraded,
    )


def take_unmatched(state: State) -> int:
    n, state.unmatched = state.unmatched, 0
    return n
