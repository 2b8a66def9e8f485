"""A few-line stand-in for the framing loop, shared by the HTTP/1 tests."""

from __future__ import annotations

from collections import deque

import pytest

from protocols.base import NEED_DATA, Direction, Invalid, Skip, Timed
from protocols.http1 import SPEC, on_eof
from protocols.http1.types import Exchange, Http1State

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


class Loop:
    """Buffers per direction, parse until NEED_DATA, resync on Invalid, pass bodies the parser skips,
    stitch: as pipeline/framing does."""

    def __init__(self) -> None:
        self.state: Http1State = SPEC.new_state()
        self.buf = {REQ: bytearray(), RESP: bytearray()}
        self.pos = {REQ: 0, RESP: 0}  # stream position of buf[0]
        self.marks: dict[Direction, list[tuple[int, int]]] = {REQ: [], RESP: []}  # (end position, ts)
        self.queues: dict[Direction, deque[Timed]] = {REQ: deque(), RESP: deque()}
        self.errors: list[str] = []
        self.clock = 0
        self.skipping = {REQ: 0, RESP: 0}  # bytes of a skipped body still to pass
        self.message: dict[Direction, tuple[Skip, int, int] | None] = {REQ: None, RESP: None}  # start, ts

    def feed(self, direction: Direction, data: bytes) -> None:
        self.clock += 10
        self.buf[direction] += data
        self.marks[direction].append((self.pos[direction] + len(self.buf[direction]), self.clock))

    def ts_at(self, direction: Direction, position: int) -> int:
        return next((ts for end, ts in self.marks[direction] if position < end), self.clock)

    def parse(self, direction: Direction) -> None:
        buf = self.buf[direction]
        while True:
            if self.skipping[direction]:
                passed = min(len(buf), self.skipping[direction])
                del buf[:passed]
                self.pos[direction] += passed
                self.skipping[direction] -= passed
                if self.skipping[direction]:
                    return
            message = self.message[direction]
            if message is not None and not message[0].more:
                self.message[direction] = None
                ts1 = self.ts_at(direction, self.pos[direction] - 1)
                self.queues[direction].append(Timed(message[0].frame, message[2], ts1, message[1]))
            if not buf:
                return
            view = memoryview(buf)
            result = SPEC.parse_frame(view, direction, self.state)
            if result is NEED_DATA:
                view.release()
                return
            start = self.pos[direction]
            if isinstance(result, Invalid):
                self.errors.append(result.reason)
                skip = SPEC.find_boundary(view, direction, 1)
                size = len(buf) if skip is None else skip
                self.message[direction] = None
            elif isinstance(result, Skip):
                assert result.size + result.skip > 0
                size = min(result.size + result.skip, len(buf))
                self.skipping[direction] = result.size + result.skip - size
                first = message or (result, start, self.ts_at(direction, start))
                self.message[direction] = (result, first[1], first[2])
            else:
                size = result.size
                ts0, ts1 = self.ts_at(direction, start), self.ts_at(direction, start + size - 1)
                if message is not None:  # the last piece of a message whose body was skipped
                    self.message[direction], start, ts0 = None, message[1], message[2]
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
