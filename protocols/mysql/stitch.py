"""The command/response state machine: pops a command and the packets of its response."""

from __future__ import annotations

from collections import deque

from protocols.base import Timed
from protocols.mysql.parse import _lenenc
from protocols.mysql.sql import analyze, use_target
from protocols.mysql.types import (
    CLIENT_DEPRECATE_EOF,
    COM_CHANGE_USER,
    COM_FIELD_LIST,
    COM_INIT_DB,
    COM_QUERY,
    COM_STMT_CLOSE,
    COM_STMT_EXECUTE,
    COM_STMT_FETCH,
    COM_STMT_PREPARE,
    COM_STMT_RESET,
    COM_STMT_SEND_LONG_DATA,
    COMMAND_NAMES,
    K_COMMAND,
    K_COMPRESSED,
    K_CONTINUATION,
    K_GREETING,
    K_HANDSHAKE_RESPONSE,
    K_PACKET,
    MAX_PAYLOAD,
    NO_RESPONSE,
    P_AFTER_DEFS,
    P_AUTH,
    P_COLDEFS,
    P_DONE,
    P_FIRST,
    P_INFILE,
    P_PREP_COLS,
    P_PREP_COLS_EOF,
    P_PREP_PARAMS,
    P_PREP_PARAMS_EOF,
    P_ROWS,
    SERVER_MORE_RESULTS_EXISTS,
    SERVER_STATUS_CURSOR_EXISTS,
    STMT_CAP,
    Exchange,
    Packet,
    Progress,
    State,
    Stmt,
)

LOGIN_FRAME_CAP = 32  # auth round trips tolerated before a login is given up as degraded
_STMT_COMMANDS = (COM_STMT_EXECUTE, COM_STMT_FETCH, COM_STMT_RESET, COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA)
OPERATIONS: dict[int, str] = {
    **COMMAND_NAMES,
    COM_STMT_PREPARE: "PREPARE",
    COM_STMT_EXECUTE: "EXECUTE",
    COM_STMT_CLOSE: "CLOSE",
    COM_STMT_RESET: "RESET",
    COM_STMT_FETCH: "FETCH",
    COM_STMT_SEND_LONG_DATA: "SEND_LONG_DATA",
    -1: "LOGIN",
}


def stitch(reqs: deque[Timed[Packet]], resps: deque[Timed[Packet]], state: State) -> list[Exchange]:
    out: list[Exchange] = []
    while True:
        _unsolicited(resps, state, out)
        if not reqs:
            return out
        kind = reqs[0].frame.kind
        if kind == K_COMMAND:
            x = _command(reqs, resps, state)
        elif kind == K_HANDSHAKE_RESPONSE:
            x = _login(reqs, resps, state)
        elif kind == K_COMPRESSED:
            x = _compressed(reqs, resps, state)
        else:  # auth data, file data, an orphan continuation, SSLRequest, TLS: nothing to report
            reqs.popleft()
            continue
        if x is None:
            return out
        if state.desynced:
            x.degraded = True
            state.desynced = False
        out.append(x)


def _unsolicited(resps: deque[Timed[Packet]], state: State, out: list[Exchange]) -> None:
    """Server packets that answer no command: the greeting, TLS records, a refusal before login."""
    while resps and state.progress is None:
        r = resps[0]
        f = r.frame
        if f.kind == K_GREETING:
            state.server_version = f.data.decode("utf-8", "replace")
        elif f.seq == -1:
            pass
        elif f.seq == 0 and f.first == 0xFF:  # e.g. "Too many connections" instead of a greeting
            x = Exchange(
                -1,
                r.start_ns,
                r.end_ns,
                r.position,
                operation="LOGIN",
                server_version=state.server_version,
                truncated=r.truncated,
            )
            x.error_code, x.error_message = _err(f.data)
            out.append(x)
        else:
            return
        resps.popleft()


def _err(data: bytes) -> tuple[int, str]:
    if len(data) < 3:
        return 0xFFFF, ""
    code = data[1] | (data[2] << 8)
    msg = data[9:] if data[3:4] == b"#" else data[3:]
    return code, msg[:256].decode("utf-8", "replace")


def _status(f: Packet) -> int:
    """Server status flags of an OK (0x00 / 0xFE) or EOF packet."""
    data = f.data
    if data[:1] == b"\xfe" and f.length < 7:
        return data[3] | (data[4] << 8) if len(data) >= 5 else 0
    _, pos = _lenenc(data, 1)
    _, pos = _lenenc(data, pos)
    return data[pos] | (data[pos + 1] << 8) if pos + 1 < len(data) else 0


def _ok(p: Progress, f: Packet) -> None:
    affected, _ = _lenenc(f.data, 1)
    if affected >= 0:
        p.affected = affected if p.affected < 0 else p.affected + affected
    p.phase = P_FIRST if _status(f) & SERVER_MORE_RESULTS_EXISTS else P_DONE


def _rows(p: Progress, f: Packet) -> None:
    first = f.first
    if first == 0xFE and f.length < MAX_PAYLOAD:  # EOF, or OK with a 0xFE header (CLIENT_DEPRECATE_EOF)
        p.phase = P_FIRST if _status(f) & SERVER_MORE_RESULTS_EXISTS else P_DONE
    elif first == 0xFF:
        p.error_code, p.error_message = _err(f.data)
        p.phase = P_DONE
    else:
        p.rows += 1


def _section_end(p: Progress, state: State, next_phase: int) -> None:
    """End of a PREPARE_OK definition section: an EOF follows unless CLIENT_DEPRECATE_EOF."""
    if state.handshake_seen and state.client_caps & CLIENT_DEPRECATE_EOF:
        _after_eof(p, next_phase)
    else:
        p.phase = next_phase


def _after_eof(p: Progress, eof_phase: int) -> None:
    if eof_phase == P_PREP_PARAMS_EOF and p.columns > 0:
        p.phase, p.left = P_PREP_COLS, p.columns
    else:
        p.phase = P_DONE


def _feed(p: Progress, f: Packet, cmd: int, state: State) -> None:
    """Advance the response state machine by one packet."""
    if f.kind == K_CONTINUATION:
        return
    ph = p.phase
    first = f.first
    if ph == P_ROWS:
        _rows(p, f)
    elif ph == P_COLDEFS:
        p.left -= 1
        if p.left <= 0:
            p.phase = P_AFTER_DEFS
    elif ph == P_FIRST:
        if first == 0xFF:
            p.error_code, p.error_message = _err(f.data)
            p.phase = P_DONE
        elif first == 0x00 and cmd == COM_STMT_PREPARE and len(f.data) >= 9:
            d = f.data
            p.stmt_id = int.from_bytes(d[1:5], "little")
            p.columns = d[5] | (d[6] << 8)
            p.params = d[7] | (d[8] << 8)
            if p.params:
                p.phase, p.left = P_PREP_PARAMS, p.params
            elif p.columns:
                p.phase, p.left = P_PREP_COLS, p.columns
            else:
                p.phase = P_DONE
        elif first == 0x00 or (first == 0xFE and f.length < 9):
            _ok(p, f)
        elif cmd in (COM_QUERY, COM_STMT_EXECUTE) and first != 0xFB:
            n, _ = _lenenc(f.data, 0)
            if n <= 0:
                p.degraded, p.phase = True, P_DONE
                return
            p.columns = n if p.columns < 0 else p.columns
            p.rows = max(p.rows, 0)
            p.phase, p.left = P_COLDEFS, n
        elif cmd == COM_FIELD_LIST:
            p.phase = P_ROWS
        elif first == 0xFB and cmd == COM_QUERY:  # LOCAL INFILE request: the outcome follows the file
            p.phase = P_INFILE
        else:  # COM_STATISTICS text, or something unmodelled: a one-packet answer
            p.degraded = p.degraded or first == 0xFB
            p.phase = P_DONE
    elif ph == P_AFTER_DEFS:
        if first == 0xFE and f.length < 7:  # classic EOF after column definitions
            cursor = _status(f) & SERVER_STATUS_CURSOR_EXISTS
            p.phase = P_DONE if cursor and cmd == COM_STMT_EXECUTE else P_ROWS
        else:
            p.phase = P_ROWS
            _rows(p, f)
    elif ph in (P_PREP_PARAMS, P_PREP_COLS):
        p.left -= 1
        if p.left <= 0:
            _section_end(p, state, ph + 1)
    elif ph in (P_PREP_PARAMS_EOF, P_PREP_COLS_EOF):
        if first == 0xFE and f.length < 9:
            _after_eof(p, ph)
        elif ph == P_PREP_PARAMS_EOF and p.columns > 0:  # no EOF: this is the first column definition
            p.phase, p.left = P_PREP_COLS, p.columns - 1
            if p.left <= 0:
                _section_end(p, state, P_PREP_COLS_EOF)
        else:
            p.phase = P_DONE
    elif ph == P_INFILE:
        if first == 0xFF:
            p.error_code, p.error_message = _err(f.data)
            p.phase = P_DONE
        else:
            _ok(p, f)
    elif ph == P_AUTH:
        if first == 0x00:
            p.phase = P_DONE
        elif first == 0xFF:
            p.error_code, p.error_message = _err(f.data)
            p.phase = P_DONE


def _optional_tail(p: Progress, state: State) -> bool:
    """The only thing still expected is an EOF that CLIENT_DEPRECATE_EOF may have removed."""
    if state.handshake_seen:
        return False
    return p.phase == P_PREP_COLS_EOF or (p.phase == P_PREP_PARAMS_EOF and p.columns <= 0)


def _request_span(reqs: deque[Timed[Packet]]) -> int:
    """How many frames the head command spans (its >16 MiB continuations), 0 if still incomplete."""
    n = 1
    last = reqs[0].frame
    while last.length == MAX_PAYLOAD:
        if n >= len(reqs):
            return 0
        if reqs[n].frame.kind not in (K_CONTINUATION, K_COMPRESSED) or reqs[n].frame.seq == 0:
            break
        last = reqs[n].frame
        n += 1
    return n


def _answered_later(reqs: deque[Timed[Packet]], n: int, response_start_ns: int) -> bool:
    """A later command was sent before this response began (commands wait for their answer)."""
    return n < len(reqs) and reqs[n].frame.kind == K_COMMAND and reqs[n].start_ns <= response_start_ns


def _command(reqs: deque[Timed[Packet]], resps: deque[Timed[Packet]], state: State) -> Exchange | None:
    req = reqs[0]
    f = req.frame
    cmd = f.first
    n = _request_span(reqs) if f.length == MAX_PAYLOAD else 1  # continuations: commands over 16 MiB only
    if n == 0:
        return None
    last = reqs[n - 1]
    if cmd in NO_RESPONSE:
        return _finish(reqs, n, Progress(req.position, P_DONE, 0, end_ns=last.end_ns), state)
    p = state.progress
    if p is None or p.position != req.position:
        phase = P_AUTH if cmd == COM_CHANGE_USER else P_ROWS if cmd == COM_STMT_FETCH else P_FIRST
        rows = 0 if cmd == COM_STMT_FETCH else -1
        p = Progress(req.position, phase, (last.frame.seq + 1) & 0xFF, rows=rows)
        state.progress = p
    while resps:
        r = resps[0]
        rf = r.frame
        if p.frames == 0:
            if r.end_ns < req.start_ns or rf.kind != K_PACKET or rf.seq != p.expect_seq:
                resps.popleft()  # answers an earlier, lost command
                continue
            if state.desynced and _answered_later(reqs, n, r.start_ns):
                p.truncated = p.degraded = True  # our answer was lost in a gap: this one is the next's
                p.end_ns, p.phase = reqs[n].start_ns, P_DONE
                break
        elif rf.seq != p.expect_seq and not (
            p.phase == P_INFILE or (p.phase == P_AUTH and rf.seq > p.expect_seq)
        ):  # the client's packets (file, auth data) advanced the sequence
            if not _optional_tail(p, state):
                p.degraded = True  # the response broke off: packets were lost
            p.phase = P_DONE
            break
        resps.popleft()
        p.frames += 1
        p.expect_seq = (rf.seq + 1) & 0xFF
        p.end_ns = r.end_ns
        if r.truncated:
            p.truncated = True
        if p.phase == P_ROWS and rf.first < 0xFE and rf.kind == K_PACKET:  # a row: _feed's commonest case
            p.rows += 1
            continue
        _feed(p, rf, cmd, state)
        if p.phase == P_DONE:
            break
    if p.phase != P_DONE and not (not resps and p.frames and _optional_tail(p, state)):
        return None
    return _finish(reqs, n, p, state)


def _finish(reqs: deque[Timed[Packet]], n: int, p: Progress, state: State) -> Exchange:
    req = reqs[0]
    f = req.frame
    cmd = f.first
    truncated = p.truncated
    for _ in range(n):
        truncated = reqs.popleft().truncated or truncated  # pop first: `or` would skip it once truncated
    state.progress = None
    x = Exchange(
        cmd,
        req.start_ns,
        max(p.end_ns, req.end_ns),
        req.position,
        namespace=state.database,
        operation=OPERATIONS.get(cmd, "UNKNOWN"),
        user=state.user,
        server_version=state.server_version,
        error_code=p.error_code,
        error_message=p.error_message,
        returned_rows=p.rows,
        columns=p.columns,
        affected_rows=p.affected,
        truncated=truncated,
        degraded=p.degraded,
    )
    ok = p.error_code == 0
    if cmd == COM_QUERY:
        sql = f.data[1:].decode("utf-8", "replace")
        x.query_text, op, x.table = analyze(sql)
        x.operation = op or "QUERY"
        if ok and op == "USE":
            target = use_target(sql)
            if target:
                state.database = x.namespace = target
    elif cmd == COM_INIT_DB:
        x.namespace = f.data[1:].decode("utf-8", "replace")
        if ok:
            state.database = x.namespace
    elif cmd == COM_STMT_PREPARE:
        text, op, table = analyze(f.data[1:].decode("utf-8", "replace"))
        x.query_text, x.table = text, table
        x.statement_id = p.stmt_id
        if ok and p.stmt_id >= 0:
            if len(state.stmts) >= STMT_CAP and p.stmt_id not in state.stmts:
                del state.stmts[next(iter(state.stmts))]  # forget the oldest statement
            state.stmts[p.stmt_id] = Stmt(text, op, table)
    elif cmd in _STMT_COMMANDS:
        x.statement_id = int.from_bytes(f.data[1:5], "little") if len(f.data) >= 5 else -1
        stmt = state.stmts.get(x.statement_id)
        if stmt is None:
            x.degraded = True  # prepared before we started watching
        else:
            x.query_text, x.table = stmt.query_text, stmt.table
            if cmd in (COM_STMT_EXECUTE, COM_STMT_FETCH) and stmt.operation:
                x.operation = stmt.operation
        if cmd == COM_STMT_CLOSE:
            state.stmts.pop(x.statement_id, None)
    return x


def _login(reqs: deque[Timed[Packet]], resps: deque[Timed[Packet]], state: State) -> Exchange | None:
    req = reqs[0]
    f = req.frame
    p = state.progress
    if p is None or p.position != req.position:
        p = state.progress = Progress(req.position, P_AUTH, (f.seq + 1) & 0xFF)
    while resps:
        r = resps[0]
        rf = r.frame
        resps.popleft()
        if r.end_ns < req.start_ns and p.frames == 0:
            continue
        p.frames += 1
        p.end_ns = r.end_ns
        p.truncated = p.truncated or r.truncated
        if rf.kind == K_PACKET:
            _feed(p, rf, -1, state)
        if p.frames >= LOGIN_FRAME_CAP and p.phase != P_DONE:
            p.degraded, p.phase = True, P_DONE
        if p.phase == P_DONE:
            break
    if p.phase != P_DONE:
        return None
    reqs.popleft()
    state.progress = None
    x = Exchange(
        -1,
        req.start_ns,
        max(p.end_ns, req.end_ns),
        req.position,
        operation="LOGIN",
        user=f.user,
        namespace=f.database,
        server_version=state.server_version,
        error_code=p.error_code,
        error_message=p.error_message,
        truncated=p.truncated or req.truncated,
        degraded=p.degraded,
    )
    if p.error_code == 0:
        state.user = f.user
        state.database = f.database or state.database
    return x


def _compressed(reqs: deque[Timed[Packet]], resps: deque[Timed[Packet]], state: State) -> Exchange | None:
    """Compressed protocol: the first inner packet of each side names the command and any error."""
    req = reqs[0]
    f = req.frame
    if f.seq != 0 or f.inner_seq not in (0, -1):  # the tail of a multi-packet command: already counted
        reqs.popleft()
        return _compressed(reqs, resps, state) if reqs and reqs[0].frame.kind == K_COMPRESSED else None
    n = 1
    while n < len(reqs) and reqs[n].frame.kind == K_COMPRESSED and reqs[n].frame.seq != 0:
        n += 1
    last = reqs[n - 1]
    cmd = f.first if f.inner_seq == 0 else -2
    p = Progress(req.position, P_DONE, (last.frame.seq + 1) & 0xFF, end_ns=last.end_ns, degraded=True)
    if cmd not in NO_RESPONSE:
        while resps:
            r = resps[0]
            if r.end_ns >= req.start_ns and r.frame.kind == K_COMPRESSED and r.frame.seq == p.expect_seq:
                break
            resps.popleft()
        if not resps:
            return None
        rf = resps[0].frame
        if rf.inner_seq >= 0 and rf.first == 0xFF:
            p.error_code, p.error_message = _err(rf.data)
        elif cmd == COM_STMT_PREPARE and rf.first == 0 and len(rf.data) >= 9:
            p.stmt_id = int.from_bytes(rf.data[1:5], "little")
        while resps and resps[0].frame.kind == K_COMPRESSED and resps[0].frame.seq == p.expect_seq:
            r = resps.popleft()
            p.expect_seq = (r.frame.seq + 1) & 0xFF
            p.end_ns = r.end_ns
            p.truncated = p.truncated or r.truncated
    x = _finish(reqs, n, p, state)
    x.compressed = x.degraded = True
    if cmd == -2:
        x.operation = "UNKNOWN"
    return x
