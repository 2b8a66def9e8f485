"""Loss accounting: a 64 KiB ring not drained under a fast ping-pong loses events, and the kernel's
counters equal exactly what did not arrive; a normal ring drained on the agent's timer loses none."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from probes.capture import Capture, CaptureOptions, CaptureStats
from probes.fragment import Batch, ConnEvent, Fragment
from tests.probes.capture_helpers import free_port, load_capture, stop

pytestmark = pytest.mark.kernel

PEERS = Path(__file__).with_name("pingpong_peers.py")


Event = Fragment | ConnEvent
CLOSED = (free_port(),)  # an allow-list of one port nobody uses: nothing is traced until pids are set


def pingpong(
    cap: Capture, seconds: float, drain_every: float | None, poll: Callable[[], list[Event]] | None = None
) -> tuple[list[Event], int]:
    """Run the pair, only its pids traced; returns the pair's events drained and the round trips made.

    `poll` replaces `cap.poll` when another thread drains the ring (it must return []). Afterwards the
    capture is closed again (`CLOSED`) if it was, so other processes' connections stay out of it.
    """
    poll = poll or cap.poll
    port = free_port()
    server = subprocess.Popen([sys.executable, str(PEERS), "server", str(port)], stdout=subprocess.PIPE)
    events: list[Fragment | ConnEvent] = []
    gc.disable()  # the events kept here grow to ~10^5 objects: full collections would stall the drain
    try:
        assert server.stdout is not None and server.stdout.readline() == b"ready\n"
        client = subprocess.Popen([sys.executable, str(PEERS), "client", str(port), str(seconds)],
                                  stdout=subprocess.PIPE)  # fmt: skip
        cap.set_filters(pids=(server.pid, client.pid))  # before its connect: the client imports first
        poll()
        while client.poll() is None:
            time.sleep(drain_every or 0.05)
            if drain_every:
                events += poll()
        out, _ = client.communicate(timeout=30)
        server.wait(timeout=10)
        time.sleep(0.05)
        for _ in range(20):
            events += poll()
    finally:
        gc.enable()
        stop(server)
        cap.set_filters(ports=CLOSED if cap.options.only_ports == CLOSED else ())
    pair = {str(server.pid), str(client.pid)}
    return [e for e in events if isinstance(e, Fragment) and e.conn_id.split("/")[1] in pair], int(out)


def traced_bytes(events: list[Fragment | ConnEvent]) -> int:
    return sum(e.length for e in events if isinstance(e, Fragment))


def all_read(cap: Capture) -> int:
    """Records read once the ring is drained again: every event counted so far has then been read (the
    count can only be ahead: exec events of other processes are not filtered and keep coming)."""
    cap.poll()
    return cap.records_read


def missed_bytes(after: CaptureStats, before: CaptureStats) -> int:
    """Bytes of the events the ring had no room for or the kernel refused to write, both counted."""
    return after.lost_bytes + after.refused_bytes - before.lost_bytes - before.refused_bytes


def closed_capture(tmp_path_factory: pytest.TempPathFactory, ring_bytes: int) -> Iterator[Capture]:
    """Closed from the start (a port nobody uses): other processes' connections are never included, so
    the counters hold the ping-pong's events only, even on a busy machine."""
    with load_capture(
        tmp_path_factory, node="loss", ring_bytes=ring_bytes, tls=False, only_ports=CLOSED
    ) as cap:
        yield cap


@pytest.fixture(scope="module")
def small_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    yield from closed_capture(tmp_path_factory, 64 << 10)


@pytest.fixture(scope="module")
def normal_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Capture]:
    yield from closed_capture(tmp_path_factory, CaptureOptions().ring_bytes)


def test_small_ring_drops_are_counted_exactly(small_ring: Capture) -> None:
    small_ring.poll()
    before, read_before = small_ring.stats(), small_ring.records_read
    events, round_trips = pingpong(small_ring, seconds=1.0, drain_every=None)  # drained only at the end
    after = small_ring.stats()
    lost_events = after.lost_events - before.lost_events
    lost_bytes = missed_bytes(after, before)
    assert round_trips > 1000 and lost_events > 0
    # Every event written arrived; every event that did not fit is counted as lost, with its bytes.
    assert after.events - before.events <= all_read(small_ring) - read_before
    payload = 64 * round_trips * 4  # each round trip: client send + server recv + server send + client recv
    assert traced_bytes(events) + lost_bytes == payload
    print(f"\n{round_trips} round trips, {lost_events} events lost ({lost_bytes} bytes)")


def test_normal_ring_drained_on_a_timer_loses_nothing(normal_ring: Capture) -> None:
    capture = normal_ring
    capture.poll()
    before, read_before = capture.stats(), capture.records_read
    events, round_trips = pingpong(capture, seconds=1.0, drain_every=0.01)
    after = capture.stats()
    assert round_trips > 1000
    assert after.lost_events == before.lost_events and after.lost_bytes == before.lost_bytes  # never full
    assert after.events - before.events <= all_read(capture) - read_before
    # Writes the kernel refused with room to spare (after retries: rare) are counted, never silent.
    assert traced_bytes(events) + missed_bytes(after, before) == 64 * round_trips * 4
    print(f"\n{round_trips} round trips, {after.refused_events - before.refused_events} writes refused")


def test_losses_reach_health_from_the_drain_loop(small_ring: Capture) -> None:
    from pipeline.run import drain_forever
    from probes.health import Health

    pingpong(small_ring, seconds=0.5, drain_every=None)  # overflow the ring
    health, stop_drain, batches = Health(), threading.Event(), []
    stop_drain.set()  # one final drain: the loop reports the counters as they stand
    drain_forever(small_ring, batches.append, stop_drain, 0.01, health)
    stats = small_ring.stats()
    assert stats.lost_events > 0
    assert health.total("capture_lost_events") == stats.lost_events + stats.refused_events
    assert health.total("capture_lost_bytes") == stats.lost_bytes + stats.refused_bytes
    assert health.total("capture_truncated") == stats.truncated
    assert health.snapshot()[("capture_lost_events", "kernel", "ring full")] == stats.lost_events


def test_a_drain_over_its_cpu_budget_pauses_and_the_kernel_counts_what_it_sheds(small_ring: Capture) -> None:
    from pipeline.cpu_budget import CpuBudget
    from pipeline.run import drain_forever

    small_ring.poll()
    before = small_ring.stats()
    delivered: list[Event] = []
    budget, stop_drain = CpuBudget(0.02), threading.Event()

    def sink(batches: list[Batch]) -> None:
        for b in batches:
            delivered.extend(b.fragments)

    drain = threading.Thread(target=drain_forever, args=(small_ring, sink, stop_drain, 0.001),
                             kwargs={"budget": budget})  # fmt: skip
    cpu0, wall0 = time.process_time(), time.monotonic()
    drain.start()
    try:
        _, round_trips = pingpong(small_ring, seconds=1.5, drain_every=None, poll=list)
    finally:
        stop_drain.set()
        drain.join(timeout=10)
    used, wall = time.process_time() - cpu0, time.monotonic() - wall0
    lost_bytes = missed_bytes(small_ring.stats(), before)
    assert budget.paused_s > 0.5 and lost_bytes > 0
    assert traced_bytes(delivered) + lost_bytes == 64 * round_trips * 4  # shed, never silently
    assert used < 0.1 * wall + 0.1, f"{used:.2f} CPU s in {wall:.2f} s: the budget did not hold"
