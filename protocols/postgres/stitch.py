"""Pairing: each request message with the backend messages that answer it, in order.

Every frontend message but Flush, Terminate and copy data is answered, in order: Parse by
ParseComplete, Bind by BindComplete, Describe by (ParameterDescription and) RowDescription or NoData,
Close by CloseComplete, Execute by DataRows and CommandComplete / EmptyQueryResponse /
PortalSuspended, Sync and Query by ReadyForQuery, or any of them by an ErrorResponse, after which the
server skips every message up to the next Sync. Notices, ParameterStatus and notifications may come
at any time and answer nothing. An exchange is a Query, an Execute (named by its prepared statement's
SQL through its portal), a failed Parse/Bind/Describe, a login or a cancel request.
"""

from __future__ import annotations

from collections import deque
from typing import TypeVar

from protocols.base import Timed
from protocols.postgres.sql import analyze_bytes
from protocols.postgres.types import (
    ASYNC,
    BIND_OK,
    CLOSE_OK,
    COMPLETE,
    COPY_BOTH,
    COPY_DATA,
    COPY_DONE,
    COPY_FAIL,
    COPY_IN,
    COPY_OUT,
    DATA_ROW,
    EMPTY,
    ERROR,
    FUNC_RESULT,
    LOGIN_FRAME_CAP,
    NO_DATA,
    PARAM_DESC,
    PARSE_OK,
    PASSWORD,
    READY,
    ROW_DESC,
    STMT_CAP,
    SUSPENDED,
    T_CANCEL,
    T_GSS,
    T_OPAQUE,
    T_SSL,
    T_SSL_REPLY,
    T_STARTUP,
    B,
    C,
    D,
    E,
    Exchange,
    F,
    H,
    Msg,
    P,
    Progress,
    Q,
    S,
    State,
    Stmt,
    X,
)

V = TypeVar("V")
ABORTED = "pipeline_aborted"
_UNANSWERED = frozenset({H, X, T_OPAQUE, PASSWORD, COPY_DATA, COPY_DONE, COPY_FAIL})
_IGNORED = ASYNC | {T_OPAQUE}
_EXTENDED = frozenset({P, B, D, C, E})
_SYNCS = frozenset({S, Q, F, T_STARTUP})  # requests answered by ReadyForQuery
_COPY_FROM_CLIENT = frozenset({COPY_DATA, COPY_DONE, COPY_FAIL})
_ENDS_EXECUTE = frozenset({COMPLETE, EMPTY, SUSPENDED})
_EXPECTED: dict[int, frozenset[int]] = {  # the message that completes each extended-query request
    P: frozenset({PARSE_OK}),
    B: frozenset({BIND_OK}),
    D: frozenset({ROW_DESC, NO_DATA}),
    C: frozenset({CLOSE_OK}),
}
_NOTHING: frozenset[int] = frozenset()
_COPY = frozenset({COPY_IN, COPY_OUT, COPY_BOTH, COPY_DATA, COPY_DONE})
# What may come in the answer to each request, and what may start it (ErrorResponse always may).
_CONTINUES: dict[int, frozenset[int]] = {
    Q: frozenset({ROW_DESC, DATA_ROW, COMPLETE, EMPTY, READY, ERROR}) | _COPY,
    F: frozenset({FUNC_RESULT, READY, ERROR}),
    E: frozenset({DATA_ROW, COMPLETE, EMPTY, SUSPENDED, ERROR}) | _COPY,
    S: frozenset({READY, ERROR}),
    T_STARTUP: frozenset(),
    **{k: v | {ERROR} for k, v in _EXPECTED.items()},
}
_CONTINUES[D] = _CONTINUES[D] | {PARAM_DESC}
_STARTS: dict[int, frozenset[int]] = {
    P: frozenset({PARSE_OK}),
    B: frozenset({BIND_OK}),
    D: frozenset({PARAM_DESC, ROW_DESC, NO_DATA}),
    C: frozenset({CLOSE_OK}),
    E: frozenset({DATA_ROW, COMPLETE, EMPTY, SUSPENDED, COPY_IN, COPY_OUT, COPY_BOTH}),
    S: frozenset({READY}),
    Q: frozenset({ROW_DESC, DATA_ROW, COMPLETE, EMPTY, COPY_IN, COPY_OUT, COPY_BOTH, READY}),
    F: frozenset({FUNC_RESULT, READY}),
}
_KIND = {P: "parse", B: "bind", D: "describe", E: "execute", Q: "query", F: "function"}


def stitch(reqs: deque[Timed[Msg]], resps: deque[Timed[Msg]], state: State) -> list[Exchange]:
    out: list[Exchange] = []
    while True:
        while resps and resps[0].frame.type in _IGNORED:  # notices, notifications: they answer nothing
            _ignored(resps.popleft().frame, state)
        if not reqs:
            return out
        req = reqs[0]
        t = req.frame.type
        if t in _UNANSWERED:
            reqs.popleft()
            continue
        if t == T_CANCEL:
            reqs.popleft()
            out.append(Exchange("cancel", req.start_ns, req.end_ns, req.position, operation="CANCEL"))
            continue
        if state.aborted and t != S and t not in (T_STARTUP, T_SSL, T_GSS):
            reqs.popleft()  # the server skips everything up to the next Sync after an error
            x_skipped = _skipped(req, state)
            if x_skipped is not None:
                out.append(x_skipped)
            continue
        p = state.progress
        if p is None or p.position != req.position:
            if not resps and not state.ended:
                return out  # nothing has answered it yet
            if resps:  # fast paths: a one-message answer (ParseComplete, ..., ReadyForQuery) is in
                r = resps[0]
                rt = r.frame.type
                if t in _EXPECTED and rt in _EXPECTED[t] and r.end_ns >= req.start_ns:
                    resps.popleft()
                    reqs.popleft()
                    _acked(req, req.truncated or r.truncated, state)
                    continue
                if t == S and rt == READY and r.end_ns >= req.start_ns and not state.aborted:
                    resps.popleft()
                    reqs.popleft()
                    _synced(state, out)
                    continue
            p = state.progress = Progress(req.position)
        x_done = _answer(req, reqs, resps, state, p, out)
        if not x_done:
            return out


def _skipped(req: Timed[Msg], state: State) -> Exchange | None:
    """A request the server skipped after an error: an Execute (or Query) is reported, as the failed
    Parse/Bind/Describe it was to run when there is one, else as aborted with its own SQL."""
    f = req.frame
    t = f.type
    if t == P:
        name, _, rest = f.data.partition(b"\x00")
        text, op, table, _ = analyze_bytes(rest.partition(b"\x00")[0])
        _remember(state.skipped, b"S" + name, Stmt(text, op, table))
    elif t == B:
        portal, stmt = _names(f.data)
        known = state.skipped.get(b"S" + stmt) or state.stmts.get(stmt)
        _remember(state.skipped, b"P" + portal, known)
    if t in (P, B, D, C):
        if state.batch_start_ns < 0:
            state.batch_start_ns = req.start_ns
        return None
    if t not in (E, Q):
        return None
    failed = state.pending_error
    if failed is not None:
        state.pending_error = None
        state.batch_start_ns = -1
        return failed
    x = _exchange(req, state, t, state.abort_end_ns)
    if t == E:
        portal = f.data.partition(b"\x00")[0]
        if b"P" + portal in state.skipped:
            bound = state.skipped[b"P" + portal]
            x.degraded = bound is None
            if bound is not None:
                x.query_text, x.operation, x.table = bound.query_text, bound.operation, bound.table
    state.batch_start_ns = -1
    x.error_type = ABORTED
    return x


def _ignored(f: Msg, state: State) -> None:
    if f.type == T_SSL_REPLY:
        state.tls = f.data != b"N"


def _answer(
    req: Timed[Msg],
    reqs: deque[Timed[Msg]],
    resps: deque[Timed[Msg]],
    state: State,
    p: Progress,
    out: list[Exchange],
) -> bool:
    """Consume the head request's answer; True when it is complete (the request was popped)."""
    t = req.frame.type
    if t == T_STARTUP:
        return _login(req, reqs, resps, state, p, out)
    if t in (T_SSL, T_GSS):
        while resps:
            r = resps.popleft()
            if r.frame.type == T_SSL_REPLY:
                _ignored(r.frame, state)
                break
            state.unmatched += 1
        else:
            return False
        reqs.popleft()
        state.progress = None
        return True
    while True:
        if p.copy_in:  # COPY FROM STDIN: the client's data, then the server's CommandComplete
            while len(reqs) > 1 and reqs[1].frame.type in _COPY_FROM_CLIENT:
                p.truncated = reqs[1].truncated or p.truncated
                del reqs[1]
        if not resps:
            if state.ended and (p.frames or state.desynced) and t in (Q, E, F):  # cut by lost bytes
                # and the close: recorded as far as it went (nothing of it, when the loss took it all)
                p.truncated = True
                _lost(req, reqs, resps, state, p, out, -1)
                return True
            return False
        r = resps[0]
        f = r.frame
        rt = f.type
        if rt in _IGNORED:
            _ignored(resps.popleft().frame, state)
            continue
        if p.frames == 0 and r.end_ns < req.start_ns:  # answers an earlier request, not seen or lost
            resps.popleft()
            state.unmatched += 1
            continue
        if state.desynced and t == Q and _answered_later(reqs, r.start_ns):
            _lost(req, reqs, resps, state, p, out, rt)  # the rest of its answer was lost in a gap:
            return True  # this message answers the next query, sent before it began
        if rt not in _CONTINUES.get(t, _NOTHING):
            # Not part of this request's answer. Bytes were lost (its end among them: a zero-filled tail,
            # a gap) or the capture joined mid-batch: when a later request's answer starts with it, this
            # request is finished as far as it was seen and that message stays for the later one.
            if rt == READY or _later_answers(reqs, rt):
                _lost(req, reqs, resps, state, p, out, rt)
                return True
            resps.popleft()  # answers nothing queued
            state.unmatched += 1
            p.degraded = True
            continue
        resps.popleft()
        p.frames += 1
        p.end_ns = r.end_ns
        if r.truncated:
            p.truncated = True
        if rt == DATA_ROW:
            p.rows = f.rows if p.rows < 0 else p.rows + f.rows
            continue
        if rt == ERROR:
            if not p.sqlstate:
                p.sqlstate = f.data.decode("ascii", "replace") or "XX000"
            if t in _EXTENDED:
                state.aborted, state.abort_end_ns = True, r.end_ns
                return _done(req, reqs, state, p, out)
            continue  # Query, FunctionCall: ReadyForQuery follows
        if t == E:
            if rt in _ENDS_EXECUTE:
                p.suspended = rt == SUSPENDED
                if rt == COMPLETE:
                    _tag(p, f.data)
                return _done(req, reqs, state, p, out)
            if rt == COPY_IN:
                p.copy_in = True
            elif rt not in (ord("H"), COPY_DATA, COPY_DONE, ROW_DESC):  # COPY TO STDOUT is answered thus
                p.degraded = True
            continue
        if t in _SYNCS:  # Sync, Query, FunctionCall: everything up to ReadyForQuery
            if rt == READY:
                if t == S:
                    _synced(state, out)
                return _done(req, reqs, state, p, out)
            if rt == COPY_IN:
                p.copy_in = True
            elif rt == COMPLETE:
                p.copy_in = False
                _tag(p, f.data)
            elif t == S or rt not in (ROW_DESC, EMPTY, ord("H"), COPY_DATA, COPY_DONE, FUNC_RESULT):
                p.degraded = True
            continue
        expected = _EXPECTED.get(t)
        if expected is None:  # nothing else is answered: never here, but never stuck either
            reqs.popleft()
            state.progress = None
            return True
        if rt in expected:
            return _done(req, reqs, state, p, out)
        if not (t == D and rt == PARAM_DESC):
            p.degraded = True


def _synced(state: State, out: list[Exchange]) -> None:
    """ReadyForQuery answered a Sync: the server runs requests again, a new batch starts."""
    state.aborted = False
    state.batch_start_ns = -1
    if state.skipped:
        state.skipped.clear()
    if state.pending_error is not None:  # a failed Parse/Bind/Describe with no Execute
        out.append(_mark(state.pending_error, state))
        state.pending_error = None


def _answered_later(reqs: deque[Timed[Msg]], response_start_ns: int) -> bool:
    """The next request was sent before this message began: a simple-query client sends nothing but
    COPY data before the ReadyForQuery, so the message answers that later request."""
    if len(reqs) < 2:
        return False
    nxt = reqs[1]
    return nxt.frame.type not in _COPY_FROM_CLIENT and nxt.start_ns <= response_start_ns


def _tag(p: Progress, tag: bytes) -> None:
    """Rows of a SELECT/FETCH/COPY CommandComplete when no DataRow was counted (COPY sends none)."""
    if p.rows < 0 and tag[:1] in (b"S", b"C", b"F", b"M"):
        word, _, last = tag.rstrip(b"\x00").rpartition(b" ")
        if last.isdigit() and word in (b"SELECT", b"COPY", b"FETCH", b"MOVE"):
            p.rows = int(last)


def _later_answers(reqs: deque[Timed[Msg]], rt: int) -> bool:
    """A queued request after the head (among the next 64) has an answer that starts with type rt."""
    for k in range(1, min(len(reqs), 65)):
        starts = _STARTS.get(reqs[k].frame.type)
        if starts is not None and rt in starts:
            return True
    return False


def _lost(
    req: Timed[Msg],
    reqs: deque[Timed[Msg]],
    resps: deque[Timed[Msg]],
    state: State,
    p: Progress,
    out: list[Exchange],
    rt: int,
) -> None:
    """The head request's answer ended unseen: a Query or Execute is recorded as far as it went
    (truncated, degraded), any other request is counted. A ReadyForQuery that no queued
    Sync/Query/FunctionCall awaits is counted and dropped too."""
    reqs.popleft()
    state.progress = None
    t = req.frame.type
    if t in (Q, E, F):
        x = _exchange(req, state, t, p.end_ns)
        state.batch_start_ns = -1
        x.sqlstate = x.error_type = p.sqlstate
        x.returned_rows = p.rows
        x.truncated = x.degraded = True
        out.append(_mark(x, state))
    else:
        state.unmatched += 1
        if t in _EXPECTED:  # answered later ones arrived, so it succeeded: the maps follow it
            _acked(req, True, state)
    if rt == READY and not any(r.frame.type in _SYNCS for r in reqs):
        resps.popleft()
        state.unmatched += 1


def _login(
    req: Timed[Msg],
    reqs: deque[Timed[Msg]],
    resps: deque[Timed[Msg]],
    state: State,
    p: Progress,
    out: list[Exchange],
) -> bool:
    """Startup: authentication round trips (the client's answers are never read) up to ReadyForQuery."""
    while len(reqs) > 1 and reqs[1].frame.type == PASSWORD:
        del reqs[1]
    while resps:
        r = resps.popleft()
        if p.frames == 0 and r.end_ns < req.start_ns:
            state.unmatched += 1
            continue
        p.frames += 1
        p.end_ns = r.end_ns
        p.truncated = p.truncated or r.truncated
        rt = r.frame.type
        if rt == ERROR:
            p.sqlstate = r.frame.data.decode("ascii", "replace") or "XX000"
        if rt in (READY, ERROR) or p.frames >= LOGIN_FRAME_CAP:
            p.degraded = p.degraded or rt not in (READY, ERROR)
            user, _, database = req.frame.data.partition(b"\x00")
            reqs.popleft()
            state.progress = None
            x = Exchange(
                "login",
                req.start_ns,
                max(p.end_ns, req.end_ns),
                req.position,
                operation="LOGIN",
                namespace=database.decode("utf-8", "replace"),
                user=user.decode("utf-8", "replace"),
                sqlstate=p.sqlstate,
                error_type=p.sqlstate,
                truncated=p.truncated or req.truncated,
                degraded=p.degraded,
            )
            if not p.sqlstate:
                state.user, state.database = x.user, x.namespace
            out.append(_mark(x, state))
            return True
    return False


def _mark(x: Exchange, state: State) -> Exchange:
    if state.desynced:
        x.degraded = True
        state.desynced = False
    return x


def _remember(table: dict[bytes, V], key: bytes, value: V) -> None:
    if key not in table and len(table) >= STMT_CAP:
        del table[next(iter(table))]  # forget the oldest
    table[key] = value


def _names(data: bytes) -> tuple[bytes, bytes]:
    first, _, rest = data.partition(b"\x00")
    return first, rest.partition(b"\x00")[0]


def _exchange(req: Timed[Msg], state: State, t: int, end_ns: int) -> Exchange:
    """The exchange a Query, an Execute or a failed extended-query request stands for."""
    f = req.frame
    x = Exchange(_KIND.get(t, "query"), req.start_ns, max(end_ns, req.end_ns), req.position)
    x.namespace, x.user = state.database, state.user
    stmt: Stmt | None = None
    if t == Q:
        text, op, table, _ = analyze_bytes(f.data.partition(b"\x00")[0])
        stmt = Stmt(text, op, table)
    elif t == P:
        name, _, rest = f.data.partition(b"\x00")
        text, op, table, _ = analyze_bytes(rest.partition(b"\x00")[0])
        stmt = Stmt(text, op, table)
    elif t == B:
        stmt = state.stmts.get(_names(f.data)[1])
    elif t == E:
        stmt = state.portals.get(f.data.partition(b"\x00")[0])
    elif t == D:
        name = f.data[1:].partition(b"\x00")[0]
        stmt = state.stmts.get(name) if f.data[:1] == b"S" else state.portals.get(name)
    elif t == F:
        x.operation = "FUNCTION_CALL"
    if stmt is not None:
        x.query_text, x.operation, x.table = stmt.query_text, stmt.operation, stmt.table
    elif t in (E, B, D):
        x.degraded = True  # prepared before the capture began
    if t in (E, B, D) and state.batch_start_ns >= 0:
        x.start_ns = min(x.start_ns, state.batch_start_ns)
        x.truncated = state.batch_truncated
    return x


def _acked(req: Timed[Msg], truncated: bool, state: State) -> None:
    """Parse, Bind, Describe or Close succeeded: the statement and portal maps follow the server's."""
    f = req.frame
    t = f.type
    if t == P:
        name, _, rest = f.data.partition(b"\x00")
        text, op, table, _ = analyze_bytes(rest.partition(b"\x00")[0])
        _remember(state.stmts, name, Stmt(text, op, table))
    elif t == B:
        portal, stmt = _names(f.data)
        _remember(state.portals, portal, state.stmts.get(stmt))
    elif t == C:
        closed = f.data[1:].partition(b"\x00")[0]
        if f.data[:1] == b"S":
            state.stmts.pop(closed, None)
        else:
            state.portals.pop(closed, None)
    if state.batch_start_ns < 0:
        state.batch_start_ns, state.batch_truncated = req.start_ns, truncated
    elif truncated:
        state.batch_truncated = True


def _done(req: Timed[Msg], reqs: deque[Timed[Msg]], state: State, p: Progress, out: list[Exchange]) -> bool:
    """The head request is answered: update the statement maps, report what is an exchange."""
    reqs.popleft()
    state.progress = None
    f = req.frame
    t = f.type
    truncated = p.truncated or req.truncated
    if not p.sqlstate:
        if t in _EXPECTED:
            _acked(req, truncated, state)
            return True
        if t == S:
            return True
    elif t == S:
        return True
    x = _exchange(req, state, t, p.end_ns)
    x.sqlstate = x.error_type = p.sqlstate
    if p.sqlstate and t in (P, B, D, C):  # reported with the Execute the server will now skip, if any
        x.truncated = x.truncated or truncated
        state.pending_error = x
        return True
    state.batch_start_ns = -1
    x.returned_rows = p.rows
    x.suspended = p.suspended
    x.truncated = x.truncated or truncated
    x.degraded = x.degraded or p.degraded
    if t == Q:
        x.kind = "query"
    out.append(_mark(x, state))
    return True


def take_unmatched(state: State) -> int:
    n, state.unmatched = state.unmatched, 0
    return n
