"""Cost of the call-chain stage (pipeline/call_chains.py) on one core: records/s and memory held.

    .venv/bin/python bench/call_chains.py [SECONDS_OF_TRAFFIC] [REQUESTS_PER_SECOND]

Synthetic traffic shaped like the test application's: each request is a chain of 4 exchanges seen from
both ends (load generator -> frontend -> api, the frontend's call made by its serving thread), i.e. 8
records and 16 fragments, spread over 8 serving threads of each tier. Time is simulated (a clock the
bench advances), so the figures are the stage's own CPU cost and the memory it holds for a window of
traffic at the given rate, not the machine's load.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)  # the checkout, not bench/ (bench/pipeline.py)

from pipeline.call_chains import CallChains, ChainLimits  # noqa: E402
from probes.fragment import Batch, Fragment, Io  # noqa: E402
from probes.health import Health  # noqa: E402
from protocols.base import ConnInfo, Endpoint, L7Record, Role  # noqa: E402

MS = 1_000_000


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def conn(cid: str, pid: int, role: Role, local: int, remote: int) -> ConnInfo:
    return ConnInfo(cid, Endpoint("127.0.0.1", local), Endpoint("127.0.0.1", remote), role, pid=pid, node="n")


def exchange(c: ConnInfo, position: int, start: int, end: int, tid: int) -> tuple[Batch, L7Record]:
    req, resp = (Io.RECV, Io.SEND) if c.role is Role.SERVER else (Io.SEND, Io.RECV)
    fragments = [
        Fragment(c.conn_id, req, position, 100, b"", start, tid),
        Fragment(c.conn_id, resp, position, 100, b"", end, tid),
    ]
    record = L7Record(
        "http", c.role, "GET /", start, end, c, "m", attributes={}, record_id=f"{c.conn_id}/{position}"
    )
    return Batch(c, fragments), record


def main(seconds: float, rate: int) -> None:
    threads = 8
    # Per serving thread: its keep-alive connections (loadgen -> frontend, frontend -> api).
    ends = []
    for t in range(threads):
        lb, fe = (
            conn(f"n/1/{t}/0", 1, Role.CLIENT, 5000 + t, 8000),
            conn(f"n/2/{t}/0", 2, Role.SERVER, 8000, 5000 + t),
        )
        out, api = (
            conn(f"n/2/{t}/1", 2, Role.CLIENT, 6000 + t, 9000),
            conn(f"n/3/{t}/0", 3, Role.SERVER, 9000, 6000 + t),
        )
        ends.append((lb, fe, out, api))
    requests = int(seconds * rate)

    def traffic() -> list[tuple[int, list[tuple[Batch, L7Record]]]]:
        return [request(i) for i in range(requests)]

    def request(i: int) -> tuple[int, list[tuple[Batch, L7Record]]]:
        t = i % threads
        lb, fe, out, api = ends[t]
        start = i * (1_000_000_000 // rate)
        pos = i // threads * 100
        parts = [
            exchange(out, pos, start + 2 * MS, start + 6 * MS, 200 + t),
            exchange(api, pos, start + 3 * MS, start + 5 * MS, 300 + t),
            exchange(fe, pos, start + 1 * MS, start + 7 * MS, 200 + t),
            exchange(lb, pos, start, start + 8 * MS, 100 + t),
        ]
        return start, parts

    clock, health = Clock(), Health()
    chains = CallChains(health, ChainLimits(), clock)
    work = traffic()
    tracemalloc.start()
    released = 0
    cpu = time.process_time()
    for start, parts in work:
        clock.now = start / 1e9 + 0.01  # records reach the stage ~10 ms after they began
        for batch, _ in parts:
            chains.observe(batch)
        chains.add([r for _, r in parts])
        released += len(chains.release())
    clock.now += chains.limits.window_s
    released += len(chains.release())
    released += len(chains.release(force=True))
    cpu = time.process_time() - cpu
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    records = 4 * requests
    assert released == records, (released, records)
    links = health.total("chain_links")
    print(f"{requests} requests, {records} records at {rate} req/s simulated; CPU {cpu:.2f} s "
          f"(traced by tracemalloc, which slows it)")  # fmt: skip
    print(f"linked {links} of {3 * requests} children, unlinked {health.total('chain_unlinked')}")
    print(f"peak held records {chains.peak_held}, peak traced memory {peak / 2**20:.1f} MiB")
    print(
        f"mean wait {1000 * chains.delay_s / chains.released:.0f} ms, max {1000 * chains.max_delay_s:.0f} ms"
    )
    # The same without tracemalloc: the stage's throughput.
    clock2 = Clock()
    chains2 = CallChains(Health(), ChainLimits(), clock2)
    work = traffic()
    cpu = time.process_time()
    for start, parts in work:
        clock2.now = start / 1e9 + 0.01
        for batch, _ in parts:
            chains2.observe(batch)
        chains2.add([r for _, r in parts])
        chains2.release()
    chains2.release(force=True)
    cpu = time.process_time() - cpu
    print(f"throughput: {records / cpu:,.0f} records/s on one core ({1e6 * cpu / records:.1f} us per record)")


def pipeline_cost(connections: int = 200, per_conn: int = 25, rounds: int = 3) -> None:
    """Real HTTP/1.1 bytes traced from both ends through the connection table and the parser, with and
    without the stage (best of `rounds`, CPU time): what the stage adds to the pipeline per record."""
    from pipeline.conn_table import ConnTable
    from pipeline.pipeline import Pipeline
    from pipeline.run import default_protocols
    from tests.support.http_traffic import Client, HttpTarget, both_ends

    with HttpTarget() as target:
        client = Client(target.port, "bench", per_conn=per_conn)
        feed: list[Batch] = []
        for _ in range(connections):
            for x in client.connection():
                first, second = both_ends(x)
                feed += first + second
    best: dict[bool, float] = {}
    for _ in range(rounds):
        for on in (False, True):
            health = Health()
            chains = CallChains(health) if on else None
            pipe = Pipeline(ConnTable(default_protocols(), health), [], chains)
            cpu = time.process_time()
            for batch in feed:
                pipe.feed((batch,))
            pipe.close()
            cpu = time.process_time() - cpu
            assert pipe.exported == 2 * len(client.log)
            assert not on or health.total("chain_links") == len(client.log)  # every server end linked
            best[on] = min(best.get(on, cpu), cpu)
    records = 2 * len(client.log)
    off, on_ = (1e6 * best[k] / records for k in (False, True))
    rate = records / best[True]
    print(f"pipeline, {records} records from real HTTP bytes (both ends): {off:.1f} us/record without "
          f"the stage, {on_:.1f} with it (+{on_ - off:.1f} us, {rate:,.0f} records/s)")  # fmt: skip


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0, int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
    pipeline_cost()
