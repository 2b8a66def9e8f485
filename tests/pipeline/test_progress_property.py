"""Property: the real framing loop makes progress on any bytes, for every registered protocol.

Random and adversarial bytes (the inputs of issue 12 and their HTTP/2 and MySQL equivalents among
them) go through `ConnParser` with the registry's specs, both directions, in random fragment splits
with gaps, uncopied (zero-filled) parts, duplicates and late arrivals. The specs' parse_frame and
find_boundary are wrapped to watch the loop from outside: within one `process()` call no step may
look at the same bytes the same way twice (each step consumes, waits or crosses a gap), positions
never go back, and a call that does not return in seconds fails the example instead of hanging.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from progress_inputs import BAD, REQ, RESP, VALID, Script

from pipeline.framing import ConnParser, Limits
from probes.fragment import Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Direction, Endpoint, Role
from protocols.registry import PROTOCOLS
from tests.support.time_limit import time_limit

pytestmark = pytest.mark.slow  # hypothesis over every protocol: the full lane runs it

NAMES = [spec.name for spec in PROTOCOLS]
STEP_SECONDS = 5.0  # one process() call on a few KiB: milliseconds when the loop progresses


class Watched:
    """The registry's specs with parse_frame/find_boundary wrapped to record each step of one call."""

    def __init__(self) -> None:
        self.parser: ConnParser | None = None
        self.steps: set[tuple[Any, ...]] = set()
        self.specs = tuple(
            dataclasses.replace(s, parse_frame=self._wrap_parse(s), find_boundary=self._wrap_find(s))
            for s in PROTOCOLS
        )

    def _note(self, kind: str, buf: memoryview, direction: Direction, start: int) -> None:
        parser = self.parser
        if parser is None or parser.spec is None or parser.request_io is None:
            return  # detection looks at copies of the heads, not at the loop's streams
        request = direction is Direction.REQUEST
        io = parser.request_io if request else (Io.RECV if parser.request_io == Io.SEND else Io.SEND)
        step = (kind, direction, parser.streams[io].position, len(buf), start)
        assert step not in self.steps, f"the loop repeated a step: {step}"
        self.steps.add(step)

    def _wrap_parse(self, spec: Any) -> Callable[..., Any]:
        def parse(buf: memoryview, direction: Direction, state: Any) -> Any:
            self._note("parse", buf, direction, 0)
            return spec.parse_frame(buf, direction, state)

        return parse

    def _wrap_find(self, spec: Any) -> Callable[..., Any]:
        def find(buf: memoryview, direction: Direction, start: int) -> Any:
            self._note("find", buf, direction, start)
            at = spec.find_boundary(buf, direction, start)
            assert at is None or start <= at, f"{spec.name}.find_boundary went back: {at} < {start}"
            return at

        return find


@dataclasses.dataclass
class Piece:
    io: Io
    position: int
    data: bytes
    length: int  # > len(data): the capture counted bytes it did not copy


def pieces(script: Script, request_io: Io, cuts: list[int], kinds: list[str]) -> list[Piece]:
    """Each direction's bytes cut into fragments; kinds say which are lost, uncopied or repeated."""
    streams = {Io.RECV: b"", Io.SEND: b""}
    response_io = Io.SEND if request_io == Io.RECV else Io.RECV
    order: list[Io] = []
    for direction, data in script:
        io = request_io if direction is REQ else response_io
        streams[io] += data
        order.append(io)
    out: list[Piece] = []
    k = 0
    for io in (Io.RECV, Io.SEND):
        data, pos = streams[io], 0
        while pos < len(data):
            size = max(1, cuts[k % len(cuts)] if cuts else len(data))
            kind = kinds[k % len(kinds)] if kinds else "ok"
            k += 1
            chunk = data[pos : pos + size]
            if kind == "uncopied":
                out.append(Piece(io, pos, chunk[: len(chunk) // 3], len(chunk)))
            elif kind == "duplicate":
                out += [Piece(io, pos, chunk, len(chunk)), Piece(io, pos, chunk, len(chunk))]
            elif kind != "lost":
                out.append(Piece(io, pos, chunk, len(chunk)))
            pos += size
    return out


def drive(script: Script, role: Role, cuts: list[int], kinds: list[str], order: list[int],
          batch: int, limits: Limits) -> Health:  # fmt: skip
    health, watched = Health(), Watched()
    info = ConnInfo("prop/1", Endpoint("127.0.0.1", 80), Endpoint("127.0.0.1", 5000), role)
    parser = watched.parser = ConnParser(info, watched.specs, limits, health)
    request_io = Io.RECV if role != Role.CLIENT else Io.SEND
    frags = pieces(script, request_io, cuts, kinds)
    for i, j in enumerate(order):  # late arrivals: swap fragments by the drawn indices
        if frags:
            a, b = i % len(frags), j % len(frags)
            frags[a], frags[b] = frags[b], frags[a]
    seen = [0, 0]
    for at in range(0, len(frags) + batch, batch):  # the empty batches past the end: holes given up
        for p in sorted(frags[at : at + batch], key=lambda p: (p.io, p.position)):
            parser.add(Fragment(info.conn_id, p.io, p.position, p.length, p.data, 1000 + p.position))
        for final in (False,) if at < len(frags) + batch - 1 else (False, True):
            watched.steps.clear()
            with time_limit(STEP_SECONDS, "process()"):
                parser.process(final=final)
            if not parser.unclaimed:
                for io in Io:  # positions never go back
                    assert parser.streams[io].position >= seen[io]
                    seen[io] = parser.streams[io].position
    return health


def blob(name: str) -> st.SearchStrategy[tuple[Direction, bytes]]:
    """One piece of a conversation: valid, adversarial, random, zeros, or a mutated valid piece."""
    valid, bad = st.sampled_from(VALID[name]), st.sampled_from(BAD[name])
    direction = st.sampled_from([REQ, RESP])

    def mutate(piece: tuple[Direction, bytes], at: int, bit: int, cut: int) -> tuple[Direction, bytes]:
        d, data = piece
        b = bytearray(data)
        if b:
            b[at % len(b)] ^= 1 << bit
        return d, bytes(b[: cut % (len(b) + 1)] if cut else b)

    return st.one_of(
        valid,
        bad,
        st.tuples(direction, st.binary(max_size=120)),
        st.tuples(direction, st.integers(1, 600).map(bytes)),
        st.builds(mutate, valid, st.integers(0, 1 << 16), st.integers(0, 7), st.integers(0, 400)),
    )


LIMITS = st.sampled_from(
    [Limits(), Limits(max_buffer=256, resync_keep=16, fill_limit=64), Limits(max_buffer=4096, hole_rounds=1)]
)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_step_consumes_waits_or_crosses_a_gap(name: str, data: st.DataObject) -> None:
    opening = data.draw(st.booleans())  # mostly start like the protocol, so it is claimed
    script = (list(VALID[name]) if opening else []) + data.draw(st.lists(blob(name), max_size=10))
    health = drive(
        script,
        role=data.draw(st.sampled_from([Role.SERVER, Role.CLIENT, Role.UNKNOWN])),
        cuts=data.draw(st.lists(st.integers(1, 80), max_size=12)),
        kinds=data.draw(
            st.lists(st.sampled_from(["ok"] * 6 + ["lost", "uncopied", "duplicate"]), max_size=8)
        ),
        order=data.draw(st.lists(st.integers(0, 50), max_size=4)),
        batch=data.draw(st.integers(1, 8)),
        limits=data.draw(LIMITS),
    )
    assert health.total("parser_stuck") == 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", NAMES)
def test_each_adversarial_input_split_at_every_byte(name: str) -> None:
    """The seeds, deterministically: after a valid conversation, cut in two at every offset."""
    for direction, bad in BAD[name]:
        for cut in range(1, len(bad) + 1):
            for role in (Role.SERVER, Role.CLIENT):
                script = [*VALID[name], (direction, bad), *VALID[name][:2]]
                size = sum(len(b) for d, b in VALID[name] if d is direction) + cut
                drive(script, role, [size, 1 << 30], ["ok"], [], batch=1, limits=Limits())
