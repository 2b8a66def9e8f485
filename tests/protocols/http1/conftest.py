"""The HTTP/1 tests drive the real framing loop through tests/support/loop.py."""

from __future__ import annotations

from typing import Any

import pytest

from protocols.base import Direction
from protocols.http1 import SPEC
from tests.support.loop import Loop as SharedLoop

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


class Loop(SharedLoop):
    """The shared real-loop driver (tests/support/loop.py) on a connection known to speak HTTP/1."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(SPEC, **kwargs)


@pytest.fixture
def loop() -> Loop:
    return Loop()


@pytest.fixture
def make_loop() -> type[Loop]:
    return Loop
