"""Shared fixtures: a real Kafka broker (started lazily, once per session) and a real OTLP receiver."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# `tests.support` must resolve to this checkout even when the package is installed from elsewhere.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.kafka_broker import Broker, create_topic, start_broker  # noqa: E402
from tests.support.otlp_receiver import OtlpReceiver  # noqa: E402

KAFKA_ENV = "L7SCOPE_KAFKA_BOOTSTRAP"
_KAFKA_FIXTURES = {"kafka_bootstrap", "kafka_broker", "kafka_topic", "shared_broker"}
_KERNEL_FIXTURES = {"capture", "small_budget", "drained"}  # tests/probes/conftest.py: a loaded tracer
# The fast lane (`-m unit`): the tests in these folders of tests/ that need no kernel, Kafka or root
# and do not take seconds on purpose.
UNIT_FOLDERS = {"protocols", "pipeline", "probes", "proto", "deploy", "support"}
_LANE_MARKERS = ("kernel", "kafka", "root", "slow")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With L7SCOPE_STRICT=1 (deploy/setup.sh test, CI) a skip is a failure: set-up installs everything."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("L7SCOPE_STRICT") == "1" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"skipped in strict mode (a prerequisite is missing): {reason}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Anything that asks for Kafka gets the `kafka` marker, so `-m "not kafka"` leaves the JVM alone;
    # anything that asks for a loaded tracer gets `kernel`. What is left in the unit folders is `unit`:
    # deploy/setup.sh test runs `-m unit` first (the fast lane), then `-m "not unit"`.
    tests = Path(__file__).resolve().parent
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if _KAFKA_FIXTURES & fixtures:
            item.add_marker(pytest.mark.kafka)
        if _KERNEL_FIXTURES & fixtures:
            item.add_marker(pytest.mark.kernel)
        try:
            folder = item.path.resolve().relative_to(tests).parts[0]
        except ValueError:  # a test file outside tests/
            continue
        if folder in UNIT_FOLDERS and not any(item.get_closest_marker(m) for m in _LANE_MARKERS):
            item.add_marker(pytest.mark.unit)


def _own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = start_broker(work_dir=tmp_path_factory.mktemp("kafka"))
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The session's broker behind `kafka_bootstrap`: never paused, stopped or restarted by a test."""
    yield from _own_broker(tmp_path_factory)


@pytest.fixture(scope="module")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A broker of this test module's own, which its tests may pause, stop or restart: taking it away
    must not leave the shared broker (and every later test) in a state nobody planned for."""
    if os.environ.get(KAFKA_ENV):
        pytest.skip(f"{KAFKA_ENV} points at an external cluster, which tests cannot pause or restart")
    yield from _own_broker(tmp_path_factory)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """ "host:port" of a Kafka cluster: $L7SCOPE_KAFKA_BOOTSTRAP, else a broker started for this session."""
    external = os.environ.get(KAFKA_ENV)
    if external:
        return external
    broker: Broker = request.getfixturevalue("shared_broker")
    return broker.bootstrap


@pytest.fixture
def kafka_topic(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: `kafka_topic(partitions=4)` creates a fresh uniquely named topic and returns its name."""

    def make(partitions: int = 4, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        create_topic(kafka_bootstrap, name, partitions)
        return name

    return make


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    """A fresh OTLP receiver (gRPC and HTTP on 127.0.0.1) for one test."""
    receiver = OtlpReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
