"""Passive call chains (pipeline/call_chains.py): links made from fragments' threads and both ends."""

from __future__ import annotations

from pipeline.call_chains import LINK_ATTRIBUTE, CallChains, ChainLimits, digest_ids
from probes.fragment import Batch, Fragment, Io
from probes.health import Health
from protocols.base import ConnInfo, Direction, Endpoint, L7Record, Role

MS = 1_000_000
LB, FE, API = 10, 20, 30  # pids: load generator, frontend, api


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def conn(conn_id: str, pid: int, role: Role, local: int, remote: int) -> ConnInfo:
    return ConnInfo(
        conn_id, Endpoint("127.0.0.1", local), Endpoint("127.0.0.1", remote), role, pid=pid, node="n"
    )


def exchange(
    c: ConnInfo, start: int, end: int, tids: tuple[int, int], position: int = 0
) -> tuple[Batch, L7Record]:
    """One exchange: its request and response fragments (by the given threads) and its record."""
    req, resp = (Io.RECV, Io.SEND) if c.role is Role.SERVER else (Io.SEND, Io.RECV)
    fragments = [
        Fragment(c.conn_id, req, position, 10, b"x" * 10, start, tids[0]),
        Fragment(c.conn_id, resp, position, 10, b"y" * 10, end, tids[1]),
    ]
    record = L7Record(
        "http", c.role, "GET /", start, end, c, "m", attributes={}, record_id=f"{c.conn_id}/{position}"
    )
    return Batch(c, fragments), record


# A chain: load generator (client, port 5000) -> frontend :8000 (thread 21) -> api :9000 (thread 31).
LB_FE = conn("n/10/3/0", LB, Role.CLIENT, 5000, 8000)
FE_IN = conn("n/20/4/0", FE, Role.SERVER, 8000, 5000)
FE_API = conn("n/20/5/0", FE, Role.CLIENT, 6000, 9000)
API_IN = conn("n/30/4/0", API, Role.SERVER, 9000, 6000)


def chain(chains: CallChains, clock: Clock, order: str = "as completed") -> dict[str, L7Record]:
    """The chain's four exchanges observed and added; released after the window."""
    parts = {
        "api_out": exchange(FE_API, 12 * MS, 18 * MS, (21, 21)),
        "api_in": exchange(API_IN, 13 * MS, 17 * MS, (31, 31)),
        "fe_in": exchange(FE_IN, 11 * MS, 20 * MS, (21, 21)),
        "lb_out": exchange(LB_FE, 10 * MS, 21 * MS, (11, 11)),
    }
    names = list(parts) if order == "as completed" else list(reversed(parts))
    for name in names:
        chains.observe(parts[name][0])
    for name in names:
        chains.add([parts[name][1]])
    clock.now += 2.0
    released = {r.record_id for r in chains.release()}
    assert released == {r.record_id for _, r in parts.values()}
    return {name: record for name, (_, record) in parts.items()}


def new(limits: ChainLimits | None = None) -> tuple[CallChains, Clock, Health]:
    clock, health = Clock(), Health()
    return CallChains(health, limits, clock), clock, health


def test_a_thread_per_request_chain_is_one_trace_with_each_parent_right() -> None:
    for order in ("as completed", "reversed"):
        chains, clock, health = new()
        r = chain(chains, clock, order)
        assert r["lb_out"].parent_span_id == ""  # the load generator serves nothing: a root
        assert r["fe_in"].parent_span_id == r["lb_out"].span_id
        assert r["fe_in"].attributes[LINK_ATTRIBUTE] == "connection"
        assert r["api_out"].parent_span_id == r["fe_in"].span_id
        assert r["api_out"].attributes[LINK_ATTRIBUTE] == "thread"
        assert r["api_in"].parent_span_id == r["api_out"].span_id
        assert {x.trace_id for x in r.values()} == {digest_ids(r["lb_out"].record_id)[0]}
        assert LINK_ATTRIBUTE not in r["lb_out"].attributes
        assert health.total("chain_unlinked") == 0
        assert health.total("chain_links") == 3


def test_span_ids_are_those_otlp_derives_from_the_record_id() -> None:
    from pipeline.otlp import span_ids

    chains, clock, _ = new()
    r = chain(chains, clock)
    for record in r.values():
        trace_id, span_id, parent = span_ids(record)
        assert span_id.hex() == digest_ids(record.record_id)[1] == record.span_id
        assert trace_id.hex() == record.trace_id and parent.hex() == record.parent_span_id


def test_records_wait_to_settle_then_leave_in_order_of_decision() -> None:
    chains, clock, _ = new(ChainLimits(settle_s=0.25, window_s=1.0))
    batch, record = exchange(LB_FE, 10 * MS, 21 * MS, (11, 11))
    chains.observe(batch)
    chains.add([record])
    assert chains.release() == [] and len(chains) == 1
    clock.now += 0.3
    assert chains.release() == [record]  # a root: nothing to wait for after settling
    assert len(chains) == 0


def test_a_header_wins_and_its_children_join_its_trace() -> None:
    chains, clock, health = new()
    fe_batch, fe_in = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    fe_in.trace_id, fe_in.parent_span_id = "ab" * 16, "cd" * 8
    out_batch, out = exchange(FE_API, 12 * MS, 18 * MS, (21, 21))
    chains.observe(fe_batch)
    chains.observe(out_batch)
    chains.add([out, fe_in])
    assert chains.release() == [fe_in]  # at once: the header decided
    assert fe_in.attributes[LINK_ATTRIBUTE] == "header" and fe_in.parent_span_id == "cd" * 8
    clock.now += 0.3
    assert chains.release() == [out]
    assert out.trace_id == "ab" * 16 and out.parent_span_id == fe_in.span_id
    assert health.total("chain_unlinked") == 0


def test_an_event_loop_serving_overlapping_requests_links_nothing_and_counts_it() -> None:
    chains, clock, health = new()
    # One thread (21) reads request A, then request B, calls out, answers A, answers B.
    other = conn("n/20/7/0", FE, Role.SERVER, 8000, 5001)
    a_batch, a = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    b_batch, b = exchange(other, 12 * MS, 25 * MS, (21, 21))
    out_batch, out = exchange(FE_API, 13 * MS, 18 * MS, (21, 21))  # B's call, inside A: unknowable
    for batch in (a_batch, b_batch, out_batch):
        chains.observe(batch)
    chains.add([out, a, b])
    clock.now += 2.0
    chains.release()
    assert out.parent_span_id == "" and LINK_ATTRIBUTE not in out.attributes
    assert health.snapshot()[("chain_unlinked", "http", "multiplexed")] == 1


def test_a_request_still_open_on_the_thread_makes_the_parent_ambiguous() -> None:
    """B was read before A and answered after A: no run of B falls inside A, yet B was open."""
    chains, clock, health = new()
    other = conn("n/20/7/0", FE, Role.SERVER, 8000, 5001)
    b_batch, _ = exchange(other, 9 * MS, 30 * MS, (21, 21))
    a_batch, a = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    out_batch, out = exchange(FE_API, 13 * MS, 18 * MS, (21, 21))
    for batch in (b_batch, a_batch, out_batch):
        chains.observe(batch)
    chains.add([out, a])  # B's record has not come yet
    clock.now += 0.3
    chains.release()
    assert out.parent_span_id == ""
    assert health.snapshot()[("chain_unlinked", "http", "multiplexed")] == 1


def test_a_process_whose_exchanges_change_threads_gets_no_thread_links() -> None:
    chains, clock, health = new()
    fe_batch, fe_in = exchange(FE_IN, 11 * MS, 20 * MS, (21, 22))  # read on 21, answered on 22
    out_batch, out = exchange(FE_API, 12 * MS, 18 * MS, (21, 21))
    chains.observe(fe_batch)
    chains.observe(out_batch)
    chains.add([out, fe_in])
    clock.now += 2.0
    chains.release()
    assert out.parent_span_id == ""
    assert health.snapshot()[("chain_unlinked", "http", "multiplexed")] == 1


def test_a_call_that_switched_threads_is_unlinked() -> None:
    chains, clock, health = new()
    fe_batch, fe_in = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    out_batch, out = exchange(FE_API, 12 * MS, 18 * MS, (21, 23))
    chains.observe(fe_batch)
    chains.observe(out_batch)
    chains.add([out, fe_in])
    clock.now += 2.0
    chains.release()
    assert out.parent_span_id == ""
    assert health.snapshot()[("chain_unlinked", "http", "thread switched")] == 1


def test_a_parent_that_does_not_come_within_the_window_leaves_the_child_unlinked() -> None:
    chains, clock, health = new(ChainLimits(settle_s=0.25, window_s=1.0))
    fe_batch, _ = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    fe_batch.fragments.pop()  # the request was read: the response is not written yet
    out_batch, out = exchange(FE_API, 12 * MS, 18 * MS, (21, 21))
    chains.observe(fe_batch)
    chains.observe(out_batch)
    chains.add([out])
    clock.now += 0.5
    assert chains.release() == []  # the thread is serving a request: its record may still come
    clock.now += 0.6
    assert chains.release() == [out] and out.parent_span_id == ""
    assert health.snapshot()[("chain_unlinked", "http", "parent late")] == 1


def test_a_server_whose_client_end_is_traced_waits_for_it() -> None:
    chains, clock, health = new()
    lb_batch, lb = exchange(LB_FE, 10 * MS, 21 * MS, (11, 11))
    fe_batch, fe_in = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    chains.observe(lb_batch)
    chains.observe(fe_batch)
    chains.add([fe_in])
    clock.now += 0.5
    assert chains.release() == []
    chains.add([lb])
    clock.now += 0.3
    assert {r.record_id for r in chains.release()} == {lb.record_id, fe_in.record_id}
    assert fe_in.parent_span_id == lb.span_id and health.total("chain_unlinked") == 0


def test_ends_whose_times_disagree_are_not_linked() -> None:
    chains, clock, health = new()
    lb_batch, lb = exchange(LB_FE, 10 * MS, 21 * MS, (11, 11))
    fe_batch, fe_in = exchange(FE_IN, 500 * MS, 520 * MS, (21, 21))  # same position, another time
    chains.observe(lb_batch)
    chains.observe(fe_batch)
    chains.add([lb, fe_in])
    clock.now += 2.0
    chains.release()
    assert fe_in.parent_span_id == ""
    assert health.snapshot()[("chain_unlinked", "http", "no client span")] == 1


def test_without_the_whole_view_thread_links_are_off() -> None:
    chains, clock, health = new()
    chains.thread_links = False
    r = chain(chains, clock)
    assert r["fe_in"].parent_span_id == r["lb_out"].span_id  # connection links still hold
    assert r["api_out"].parent_span_id == ""
    # Both client calls: without the node's other connections no thread can be shown to serve nothing.
    assert health.snapshot()[("chain_unlinked", "http", "partial view")] == 2


def test_held_records_are_bounded_and_the_excess_counted() -> None:
    chains, clock, health = new(ChainLimits(max_held=2))
    records = []
    for i in range(5):
        c = conn(f"n/10/{i}/0", LB, Role.CLIENT, 5000 + i, 8000)
        batch, record = exchange(c, 10 * MS, 21 * MS, (11, 11))
        chains.observe(batch)
        records.append(record)
    chains.add(records)
    assert len(chains.release()) == 3 and len(chains) == 2
    assert health.snapshot()[("chain_unlinked", "http", "pressure")] == 3
    clock.now += 2.0
    assert len(chains.release()) == 2


def test_held_records_hold_back_their_kafka_offsets() -> None:
    chains, _, _ = new()
    batch, record = exchange(LB_FE, 10 * MS, 21 * MS, (11, 11))
    chains.observe(batch)
    chains.add([record], partition=3, offset=42)
    assert chains.low_water(3) == 42 and chains.low_water(0) is None
    assert chains.release(force=True) == [record]
    assert chains.low_water(3) is None


def test_released_parents_stay_findable_for_late_children() -> None:
    chains, clock, _ = new()
    fe_batch, fe_in = exchange(FE_IN, 11 * MS, 20 * MS, (21, 21))
    chains.observe(fe_batch)
    chains.add([fe_in])
    clock.now += 0.3
    assert chains.release() == [fe_in]
    out_batch, out = exchange(FE_API, 12 * MS, 18 * MS, (21, 21))
    chains.observe(out_batch)
    chains.add([out])
    clock.now += 0.3
    assert chains.release() == [out] and out.parent_span_id == fe_in.span_id


def test_the_pipeline_links_both_ends_of_a_parsed_http_connection() -> None:
    """Real bytes through the connection table and the HTTP/1 parser, both ends of one connection."""
    from pipeline.conn_table import ConnTable
    from pipeline.exporter import Exporter
    from pipeline.pipeline import Pipeline
    from pipeline.run import default_protocols

    class Keep(Exporter):
        def __init__(self) -> None:
            self.records: list[L7Record] = []

        def export(self, records: list[L7Record]) -> None:
            self.records += records

        def close(self) -> None:
            pass

    health, clock, keep = Health(), Clock(), Keep()
    pipeline = Pipeline(ConnTable(default_protocols(), health), [keep], CallChains(health, clock=clock))
    request, response = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    client = Batch(LB_FE, [
        Fragment(LB_FE.conn_id, Io.SEND, 0, len(request), request, 10 * MS, 11),
        Fragment(LB_FE.conn_id, Io.RECV, 0, len(response), response, 21 * MS, 11),
    ])  # fmt: skip
    server = Batch(FE_IN, [
        Fragment(FE_IN.conn_id, Io.RECV, 0, len(request), request, 11 * MS, 21),
        Fragment(FE_IN.conn_id, Io.SEND, 0, len(response), response, 20 * MS, 21),
    ])  # fmt: skip
    assert pipeline.feed([server, client], [(0, 7), (0, 8)]) == 0  # held: settling
    assert pipeline.low_water([0]) == {0: 7}
    clock.now += 0.3
    assert pipeline.release() == 2 and pipeline.low_water([0]) == {0: None}
    by_role = {r.role: r for r in keep.records}
    assert by_role[Role.SERVER].parent_span_id == by_role[Role.CLIENT].span_id
    assert by_role[Role.SERVER].trace_id == by_role[Role.CLIENT].trace_id

    # Was: an exchange whose request came in one message and its response in a later one was held at
    # the later offset, so a commit could pass the request's message while the record was still held:
    # after a kill -9 the new owner re-read only the response (test_kill9_member_mid_load, 1 run in 6).
    half = len(request)
    first = Batch(FE_IN, [Fragment(FE_IN.conn_id, Io.RECV, half, half, request, 31 * MS, 21)])
    second = Batch(
        FE_IN, [Fragment(FE_IN.conn_id, Io.SEND, len(response), len(response), response, 40 * MS, 21)]
    )
    assert pipeline.feed([first], [(0, 20)]) == 0 and pipeline.low_water([0]) == {0: 20}
    assert pipeline.feed([second], [(0, 21)]) == 0  # the record is made, and held
    assert pipeline.low_water([0]) == {0: 20}  # from the request's message, not the response's
    assert by_role[Role.SERVER].attributes[LINK_ATTRIBUTE] == "connection"


def test_b3_headers_are_read_as_the_trace_context_they_carry() -> None:
    from protocols.http1.parse import parse_frame
    from protocols.http1.types import Http1State
    from protocols.http_semconv import b3_as_traceparent

    trace, span = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
    assert b3_as_traceparent(f"{trace}-{span}-1-05e3ac9a4f6e3b90") == f"00-{trace}-{span}-01"
    assert b3_as_traceparent(f"{trace[16:]}-{span}") == f"00-{'0' * 16}{trace[16:]}-{span}-01"
    assert b3_as_traceparent("", trace.upper(), span) == f"00-{trace}-{span}-01"
    assert b3_as_traceparent("0") == b3_as_traceparent("", trace, "xyz") == ""
    for headers in (f"b3: {trace}-{span}-1\r\n", f"X-B3-TraceId: {trace}\r\nX-B3-SpanId: {span}\r\n"):
        raw = f"GET / HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode()
        parsed = parse_frame(memoryview(raw), Direction.REQUEST, Http1State())
        assert parsed.frame.traceparent == f"00-{trace}-{span}-01"  # type: ignore[union-attr]


def test_connections_older_than_the_agent_are_not_linked_by_position() -> None:
    """Byte positions count from the agent's first sight of each end: for a connection it joined
    mid-stream (role inferred) the two ends' positions need not name the same request."""
    import dataclasses

    for inferred in ("client", "server"):
        chains, clock, health = new()
        lb_conn = dataclasses.replace(LB_FE, role_inferred=inferred == "client")
        fe_conn = dataclasses.replace(FE_IN, role_inferred=inferred == "server")
        lb_batch, lb = exchange(lb_conn, 10 * MS, 21 * MS, (11, 11))
        fe_batch, fe_in = exchange(fe_conn, 11 * MS, 20 * MS, (21, 21))
        chains.observe(lb_batch)
        chains.observe(fe_batch)
        chains.add([lb, fe_in])
        clock.now += 2.0
        chains.release()
        assert fe_in.parent_span_id == "" and LINK_ATTRIBUTE not in fe_in.attributes
        assert health.total("chain_unlinked") == 1
