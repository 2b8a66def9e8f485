"""The HTTP/1 tests drive the real framing loop through tests/support/loop.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocols.base import Direction
from protocols.http1 import SPEC
from tests.support.loop import Loop

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


def http1_loop() -> Loop:
    return Loop(SPEC)


@pytest.fixture
def loop() -> Loop:
    return http1_loop()


@pytest.fixture
def make_loop() -> Callable[[], Loop]:
    return http1_loop
