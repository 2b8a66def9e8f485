"""Real-kernel fixtures for capture tests: one loaded tracer per test module."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from probes.capture import Capture
from tests.probes.capture_helpers import load_capture


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """A tracer with a deliberately small per-syscall copy budget, for tests of what lies past it."""
    cap = load_capture(tmp_path_factory, max_chunks=8, max_iov=16)
    cap.poll()
    try:
        yield cap
    finally:
        cap.close()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    started = time.monotonic()
    cap = load_capture(tmp_path_factory)
    print(
        f"\ncapture ready in {time.monotonic() - started:.2f} s (bcc compile+load {cap.load_seconds:.2f} s)"
    )
    try:
        yield cap
    finally:
        cap.close()


@pytest.fixture
def drained(capture: Capture) -> Capture:
    """The module's capture with everything already in the ring thrown away."""
    capture.poll()
    return capture
