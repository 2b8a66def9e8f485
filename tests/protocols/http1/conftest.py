"""A few-line stand-in for the framing loop, shared by the HTTP/1 tests."""

from __future__ import annotations

from collections import deque

import pytest

from protocols.base import NEED_DATA, Direction, Invalid, Timed
from protocols.http1 import SPEC, on_eof
from protocols.http1.types import Exchange, Http1State

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


class Loop:
    """Buffers per direction, parse until NEED_DATA, resync on Invalid, stitch: as pipeline/framing does."""

    def __init__(self) -> None:
        self.state: Http1State = SPEC.new_state()
        self.buf = {REQ: bytearray(), RESP: bytearray()}
        self.pos = {REQ: 0, RESP: 0}  # stream position of buf[0]
        self.marks: dict[Direction, list[tuple[int, int]]] = {REQ: [], RESP: []}  # (end position, ts)
        self.queues: dict[Direction, deque[Timed]] = {REQ: deque(), RESP: deque()}
        self.errors: list[str] = []
        self.clock = 0

    def feed(self, direction: Direction, data: bytes) -> None:
        self.clock += 10
        self.buf[direction] += data
        self.marks[direction].append((self.pos[direction] + len(self.buf[direction]), self.clock))

    def ts_at(self, direction: Direction, position: int) -> int:
        return next((ts for end, ts in self.marks[direction] if position < end), self.clock)

    def parse(self, direction: Direction) -> None:
        buf = self.buf[direction]
        while buf:
            view = memoryview(buf)
            result = SPEC.parse_frame(view, direction, self.state)
            if result is NEED_DATA:
                view.release()
                return
            if isinstance(result, Invalid):
                self.errors.append(result.reason)
                skip = SPEC.find_boundary(view, direction, 1)
                size = len(buf) if skip is None else skip
            else:
                size = result.size
                start, end = self.pos[direction], self.pos[direction] + size - 1
                ts0, ts1 = self.ts_at(direction, start), self.ts_at(direction, end)
                self.queues[direction].append(Timed(result.frame, ts0, ts1, start))
            view.release()  # frames must hold no reference into buf, or this del raises BufferError
            del buf[:size]
            self.pos[direction] += size

    def run(self, eof: bool = False) -> list[Exchange]:
        for direction in (REQ, RESP):
            if eof:
                on_eof(self.state, direction)
            self.parse(direction)
        return SPEC.stitch(self.queues[REQ], self.queues[RESP], self.state)


@pytest.fixture
def loop() -> Loop:
    return Loop()


@pytest.fixture
def make_loop() -> type[Loop]:
    return Loop
