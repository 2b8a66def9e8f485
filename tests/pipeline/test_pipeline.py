"""The Pipeline's contract (pipeline/pipeline.py): feed, tick and close hand every record to every
exporter exactly once, count what they hand over, and close the exporters once."""

from __future__ import annotations

from pipeline.conn_table import ConnActivity, ConnTable, TableLimits
from pipeline.exporter import BoundedExporter, Exporter
from pipeline.pipeline import Pipeline
from pipeline.run import default_protocols
from probes.fragment import Batch, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role


def server(port: int) -> ConnInfo:
    return ConnInfo(f"n1/7/{port}/1", Endpoint("127.0.0.1", 8000), Endpoint("127.0.0.1", port), Role.SERVER,
                    pid=7, process="httpd", node="n1")  # fmt: skip


def exchange(conn: ConnInfo, path: str, closed_by_length: bool) -> list[Batch]:
    """An HTTP/1.0 exchange; without a Content-Length the response ends only when the connection does."""
    request = f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode()
    length = "Content-Length: 2\r\n" if closed_by_length else ""
    response = f"HTTP/1.0 200 OK\r\n{length}\r\nok".encode()
    return [
        Batch(conn, [Fragment(conn.conn_id, Io.RECV, 0, len(request), request, 1_000)]),
        Batch(conn, [Fragment(conn.conn_id, Io.SEND, 0, len(response), response, 2_000)]),
    ]


class Toy(Exporter):
    def __init__(self) -> None:
        self.paths: list[object] = []
        self.observed = self.flushed = self.closed = 0
        self.lags: dict[tuple[str, int], int] = {}

    def export(self, records: list[L7Record]) -> None:
        self.paths += [r.attributes["url.path"] for r in records]

    def export_activity(self, activity: list[ConnActivity]) -> None:
        self.observed += len(activity)

    def flush(self) -> None:
        self.flushed += 1

    def set_consumer_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lags[(topic, partition)] = lag

    def close(self) -> None:
        self.closed += 1


class Bounded(Toy, BoundedExporter):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail = fail
        self.given: list[float] = []

    def close_within(self, timeout_s: float) -> None:
        self.given.append(timeout_s)
        self.closed += 1
        if self.fail:
            raise RuntimeError("collector gone")


def new_pipeline(exporters: list[Exporter], clock: list[float] | None = None) -> Pipeline:
    now = clock if clock is not None else [0.0]
    limits = TableLimits(idle_seconds=10.0)
    table = ConnTable(default_protocols(), Health(), table_limits=limits, clock=lambda: now[0])
    return Pipeline(table, exporters)


def test_feed_and_close_hand_every_record_to_every_exporter_once() -> None:
    toys: list[Exporter] = [Toy(), Bounded(), Toy()]
    pipeline = new_pipeline(toys)
    finished, open_ = exchange(server(41000), "/done", True), exchange(server(41001), "/open", False)
    assert pipeline.feed(finished + open_) == 1
    assert pipeline.close() == 1  # the open connection's record, made by the one flush
    for toy in toys:
        assert isinstance(toy, Toy)
        assert toy.paths == ["/done", "/open"]
        assert (toy.observed, toy.closed) == (4, 1)
    assert pipeline.exported == 2
    assert len(pipeline.table) == 0


def test_tick_ends_only_the_connections_idle_too_long() -> None:
    clock = [100.0]
    toy = Toy()
    pipeline = new_pipeline([toy], clock)
    pipeline.feed(exchange(server(41000), "/old", False))
    clock[0] = 105.0
    pipeline.feed(exchange(server(41001), "/young", False))
    clock[0] = 111.0
    assert pipeline.tick() == 1
    assert toy.paths == ["/old"]
    assert pipeline.close() == 1
    assert toy.paths == ["/old", "/young"]
    assert pipeline.exported == 2


def test_positions_hold_the_commit_back_and_a_revoke_flushes_durably() -> None:
    toy = Toy()
    pipeline = new_pipeline([toy])
    batches = exchange(server(41000), "/open", False)
    pipeline.feed(batches, [(3, 17), (3, 18)])
    assert pipeline.low_water([3, 4]) == {3: 17, 4: None}
    assert pipeline.revoke({3}) == {3: 17}  # taken before the flush forgets them
    assert (toy.paths, toy.flushed) == (["/open"], 1)
    assert pipeline.low_water([3]) == {3: None}
    pipeline.report_lag("frags", {3: 5})
    assert toy.lags == {("frags", 3): 5}
    assert pipeline.close() == 0
    assert pipeline.exported == 1


def test_bounded_exporters_share_the_close_deadline_and_a_failure_closes_the_rest() -> None:
    first, second, plain = Bounded(fail=True), Bounded(), Toy()
    pipeline = new_pipeline([first, plain, second])
    pipeline.close(timeout_s=2.0)
    assert (first.closed, plain.closed, second.closed) == (1, 1, 1)
    assert 0.9 < first.given[0] <= 1.0  # half of the deadline: two bounded exporters
    assert 1.0 < second.given[0] <= 2.0  # the last gets all that is left (the first returned at once)
