"""Real-kernel fixtures for capture tests: one loaded tracer per test module."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    if os.geteuid() != 0:
        pytest.skip("kernel capture tests need root")
    cache = Path(os.environ.get("L7SCOPE_HEADER_CACHE", tmp_path_factory.getbasetemp() / "kernel-headers"))
    started = time.monotonic()
    cap = Capture(CaptureOptions(node="test", header_cache=cache))
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
