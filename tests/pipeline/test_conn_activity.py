"""The connection table's second output: each batch's activity on its connection (bytes each way, time
span, close), parsed or not, handed by the Pipeline to every exporter before the records of the feed."""

from __future__ import annotations

from pipeline.conn_table import ConnActivity, ConnTable, activity_of
from pipeline.exporter import Exporter
from pipeline.pipeline import Pipeline
from pipeline.run import default_protocols
from probes.fragment import Batch, ConnEvent, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, L7Record, Role

CONN = ConnInfo("n1/7/9/1", Endpoint("127.0.0.1", 8000), Endpoint("127.0.0.1", 41000), Role.SERVER,
                pid=7, process="httpd", node="n1")  # fmt: skip


def frag(io: Io, position: int, length: int, ts_ns: int, data: bytes = b"") -> Fragment:
    return Fragment(CONN.conn_id, io, position, length, data, ts_ns)


def test_a_batch_sums_both_directions_copied_or_not_and_spans_its_times() -> None:
    batch = Batch(
        CONN,
        [frag(Io.RECV, 0, 300, 5_000, b"x" * 10), frag(Io.SEND, 0, 40, 9_000), frag(Io.RECV, 300, 2, 3_000)],
        ConnEvent(CONN, 12_000, closed=True),
    )
    assert activity_of(batch) == ConnActivity(CONN, 40, 302, 3_000, 12_000, True)
    assert activity_of(batch).role == Role.SERVER


def test_one_fragment_and_no_fragment_batches() -> None:
    one = ConnActivity(CONN, 100, 0, 4_000, 4_000, False)
    assert activity_of(Batch(CONN, [frag(Io.SEND, 7, 100, 4_000)])) == one
    assert activity_of(Batch(CONN, [frag(Io.RECV, 7, 5, 4_000)], ConnEvent(CONN, 6_000, closed=True))) == (
        ConnActivity(CONN, 0, 5, 4_000, 6_000, True)
    )
    assert activity_of(Batch(CONN, [], ConnEvent(CONN, 6_000, closed=True))) == ConnActivity(
        CONN, 0, 0, 6_000, 6_000, True
    )
    assert activity_of(Batch(CONN, [])) == ConnActivity(CONN, 0, 0, 0, 0, False)


class Log(Exporter):
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def export(self, records: list[L7Record]) -> None:
        if records:
            self.calls.append(("records", [r.name for r in records]))

    def export_activity(self, activity: list[ConnActivity]) -> None:
        self.calls.append(("activity", [(a.conn.conn_id, a.sent, a.received, a.closed) for a in activity]))

    def close(self) -> None:
        pass


def test_every_batch_parsed_or_not_reaches_every_exporter_as_activity_before_its_records() -> None:
    request, response = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"
    other = ConnInfo("n1/7/9/2", CONN.local, Endpoint("127.0.0.1", 41001), Role.SERVER, pid=7,
                     process="httpd", node="n1")  # fmt: skip
    garbage = b"\x00\x01 not a protocol l7scope parses \xff" * 4
    batches = [
        Batch(CONN, [frag(Io.RECV, 0, len(request), 1_000, request)]),
        Batch(other, [Fragment(other.conn_id, Io.RECV, 0, len(garbage), garbage, 1_500)]),
        Batch(CONN, [frag(Io.SEND, 0, len(response), 2_000, response)], ConnEvent(CONN, 3_000, closed=True)),
    ]
    logs = [Log(), Log()]
    pipeline = Pipeline(ConnTable(default_protocols(), Health()), logs)
    assert pipeline.feed(batches) == 1
    for log in logs:
        assert log.calls == [
            ("activity", [(CONN.conn_id, 0, len(request), False), (other.conn_id, 0, len(garbage), False),
                          (CONN.conn_id, len(response), 0, True)]),
            ("records", ["GET /a"]),
        ]  # fmt: skip


def test_table_feed_at_positions_is_apply_batch_by_batch() -> None:
    request, response = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"
    batches = [
        Batch(CONN, [frag(Io.RECV, 0, len(request), 1_000, request)]),
        Batch(CONN, [frag(Io.SEND, 0, len(response), 2_000, response)]),
        Batch(CONN, [frag(Io.RECV, len(request), len(request), 3_000, request)]),
    ]
    fed, applied = ConnTable(default_protocols(), Health()), ConnTable(default_protocols(), Health())
    records, activity = fed.feed(batches, [(2, 10), (2, 11), (2, 12)])
    expected = [r for i, b in enumerate(batches) for r in applied.apply(b, 2, 10 + i)]
    assert [r.record_id for r in records] == [r.record_id for r in expected] and len(records) == 1
    assert activity == [activity_of(b) for b in batches]
    assert fed.low_water(2) == applied.low_water(2) == 12  # the third request still waits for its answer


class RecordsOnly(Exporter):
    def __init__(self) -> None:
        self.names: list[str] = []

    def export(self, records: list[L7Record]) -> None:
        self.names += [r.name for r in records]

    def close(self) -> None:
        pass


def test_activity_is_made_only_when_an_exporter_takes_it() -> None:
    """Per-batch work no exporter asked for: a pipeline of records-only exporters makes no activity."""
    request, response = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 204 No Content\r\n\r\n"
    batches = [Batch(CONN, [frag(Io.RECV, 0, len(request), 1_000, request)]),
               Batch(CONN, [frag(Io.SEND, 0, len(response), 2_000, response)])]  # fmt: skip
    only = RecordsOnly()
    pipeline = Pipeline(ConnTable(default_protocols(), Health()), [only])
    assert pipeline.activity_exporters == []
    assert pipeline.table.feed(batches[:1], activity=False).activity == []
    assert pipeline.feed(batches[1:]) == 1 and only.names == ["GET /a"]
    log = Log()
    assert Pipeline(ConnTable(default_protocols(), Health()), [only, log]).activity_exporters == [log]
