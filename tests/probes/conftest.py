"""Real-kernel fixtures for capture tests: one loaded tracer per test module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions


def _loaded(tmp_path_factory: pytest.TempPathFactory, **options: int) -> Capture:
    if os.geteuid() != 0:
        pytest.skip("kernel capture tests need root")
    cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path_factory.getbasetemp() / "kernel-headers"))
    return Capture(CaptureOptions(node="test", header_cache=cache, **options))


@pytest.fixture(scope="module")
def small_budget(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    """A tracer with a deliberately small per-syscall copy budget, for tests of what lies past it."""
    cap = _loaded(tmp_path_factory, max_chunks=8, max_iov=16)
    cap.poll()
    try:
        yield cap
    finally:
        cap.close()


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    started = time.monotonic()
    cap = _loaded(tmp_path_factory)
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
