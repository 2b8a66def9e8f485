"""Kafka through the real framing loop under capture damage: pipelining, split writes, zero-fill, holes,
a mid-stream join, truncation at every offset, huge counts, messages larger than the whole-parse cap,
random bytes; and strict detection against the other protocols' openings."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.base import Direction
from protocols.kafka import SPEC
from protocols.kafka.parse import detect, find_boundary
from protocols.kafka.types import PREFIX_CAP, WHOLE_CAP
from tests.pipeline.progress_inputs import kafka_request
from tests.protocols.kafka import wire
from tests.support.loop import REQ, RESP, Loop

pytestmark = pytest.mark.unit


def produce(corr: int, n: int = 2, partition: int = 0) -> tuple[bytes, bytes]:
    return (
        wire.produce_request(9, corr, "t", {partition: wire.batch(n)}),
        wire.produce_response(9, corr, "t", [(partition, 0, 100 + corr)]),
    )


def accounted(loop: Loop, calls: int) -> None:
    assert len(loop.records) + loop.health.total("unmatched_frames") == calls, loop.health.snapshot()
    assert not loop.queues[REQ] and not loop.queues[RESP]


def test_many_requests_in_flight_pair_by_correlation_id() -> None:
    loop = Loop(SPEC)
    pairs = [produce(c, n=c + 1) for c in range(50)]
    loop.feed(REQ, b"".join(req for req, _ in pairs))
    loop.feed(RESP, b"".join(resp for _, resp in pairs))
    loop.run(eof=True)
    assert loop.errors == [] and loop.health.total("unmatched_frames") == 0
    assert [r.attributes["messaging.batch.message_count"] for r in loop.records] == list(range(1, 51))
    assert [r.attributes["messaging.kafka.offset"] for r in loop.records] == [100 + c for c in range(50)]


def test_bytes_split_at_every_write_boundary_parse_the_same() -> None:
    loop = Loop(SPEC)
    req, resp = produce(1, n=5)
    for k in range(len(req)):
        loop.feed(REQ, req[k : k + 1])
        loop.run()
    for k in range(0, len(resp), 3):
        loop.feed(RESP, resp[k : k + 3])
        loop.run()
    assert loop.errors == [] and len(loop.records) == 1
    assert loop.records[0].attributes["messaging.batch.message_count"] == 5


def test_a_lost_response_costs_its_exchange_and_the_pairing_holds() -> None:
    """Response 2 lies in a hole: request 2 is counted unmatched, 1 and 3 pair with their own."""
    loop = Loop(SPEC)
    pairs = [produce(c) for c in (1, 2, 3)]
    for req, _ in pairs:
        loop.feed(REQ, req)
    loop.feed(RESP, pairs[0][1])
    loop.feed(RESP, pairs[2][1], hole=len(pairs[1][1]))
    loop.run(eof=True)
    assert loop.errors == [] and loop.health.total("gaps") == 1
    assert [x.request.frame.correlation_id for x in loop.exchanges] == [1, 3]
    assert all(x.response.frame.correlation_id == x.request.frame.correlation_id for x in loop.exchanges)
    accounted(loop, 3)


def test_a_lost_request_leaves_its_response_unmatched() -> None:
    loop = Loop(SPEC)
    pairs = [produce(c) for c in (1, 2, 3)]
    loop.feed(REQ, pairs[0][0])
    loop.feed(REQ, pairs[2][0], hole=len(pairs[1][0]))
    for _, resp in pairs:
        loop.feed(RESP, resp)
    loop.run(eof=True)
    assert [x.request.frame.correlation_id for x in loop.exchanges] == [1, 3]
    assert loop.health.total("unmatched_frames") == 1 and loop.errors == []


def test_a_response_copied_in_part_is_truncated_not_an_error() -> None:
    loop = Loop(SPEC)
    req = wire.fetch_request(12, 4, "t", [0])
    resp = wire.fetch_response(12, 4, "t", [(0, 0, wire.batch(50))])
    loop.feed(REQ, req)
    loop.feed(RESP, resp[:80], length=len(resp))
    req2, resp2 = produce(5)
    loop.feed(REQ, req2)
    loop.feed(RESP, resp2)
    loop.run(eof=True)
    assert loop.errors == [] and len(loop.records) == 2
    assert loop.records[0].truncated and not loop.records[1].truncated
    assert loop.records[1].attributes["messaging.kafka.offset"] == 105


def test_joined_mid_stream_the_loop_finds_the_next_request_and_its_response() -> None:
    loop = Loop(SPEC, detect=True)
    pairs = [produce(c) for c in (1, 2)]
    loop.feed(REQ, pairs[0][0][17:] + pairs[1][0])
    loop.feed(RESP, pairs[0][1][9:] + pairs[1][1])
    loop.run(eof=True)
    assert loop.parser.spec is not None and loop.parser.spec.name == "kafka"
    assert [x.request.frame.correlation_id for x in loop.exchanges] == [2]
    assert loop.exchanges[0].response.frame.correlation_id == 2


@pytest.mark.parametrize("direction", [REQ, RESP])
def test_a_conversation_cut_at_every_offset_ends_accounted(direction: Direction) -> None:
    req, resp = produce(1, n=3)
    fetch_req = wire.fetch_request(12, 2, "t", [0])
    fetch_resp = wire.fetch_response(12, 2, "t", [(0, 0, wire.batch(3))])
    cut_side = req + fetch_req if direction is REQ else resp + fetch_resp
    for cut in range(len(cut_side) + 1):
        loop = Loop(SPEC)
        if direction is REQ:
            loop.feed(REQ, cut_side[:cut])
            loop.feed(RESP, resp + fetch_resp)
        else:
            loop.feed(REQ, req + fetch_req)
            loop.feed(RESP, cut_side[:cut])
        loop.run(eof=True)
        assert loop.errors == [], cut
        assert len(loop.records) <= 2 and not loop.queues[REQ] and not loop.queues[RESP]
        assert all(r.error_type is None for r in loop.records), cut


def test_huge_array_counts_and_string_lengths_cost_nothing() -> None:
    loop = Loop(SPEC)
    huge_topics = kafka_request(0, 3, 1, b"\xff\xff\x00\x01\x00\x00\x75\x30\x7f\xff\xff\xff")
    huge_string = kafka_request(3, 1, 2, b"\x00\x00\x00\x01\x7f\xff")
    loop.feed(REQ, huge_topics + huge_string)
    loop.feed(RESP, struct.pack(">ii", 4, 1) + struct.pack(">ii", 4, 2))
    loop.run(eof=True)
    assert loop.errors == [] and len(loop.records) == 2
    assert all(r.degraded for r in loop.records)  # read in part: the layout did not hold


def test_a_message_larger_than_the_whole_parse_cap_is_read_from_its_prefix_and_skipped() -> None:
    big = wire.batch(1, value=b"x" * (WHOLE_CAP + 1000))
    req = wire.produce_request(9, 1, "big", {0: wire.batch(3) + big})
    resp = wire.produce_response(9, 1, "big", [(0, 0, 7)])
    loop = Loop(SPEC)
    for k in range(0, len(req), 1 << 16):
        loop.feed(REQ, req[k : k + (1 << 16)])
        loop.run()
    loop.feed(RESP, resp)
    loop.run(eof=True)
    assert loop.errors == [] and len(loop.records) == 1
    r = loop.records[0]
    assert r.name == "send big" and r.degraded and r.attributes["messaging.batch.message_count"] >= 3
    assert max(len(s) for s in loop.parser.streams) < PREFIX_CAP  # the body went by unbuffered


OTHERS = {
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "http2": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "tls": bytes.fromhex("16030100f5010000f10303") + bytes(64),
    "mysql_query": b"\x09\x00\x00\x00\x03SELECT 1",
    "mysql_256": b"\x00\x01\x00\x00\x03" + b"S" * 256,
    "postgres_startup": struct.pack(">ii", 41, 196608) + b"user\x00postgres\x00database\x00shop\x00\x00",
    "postgres_ssl": struct.pack(">ii", 8, 80877103),
    "postgres_query": b"Q\x00\x00\x00\x0dSELECT 1\x00",
    "redis": b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
    "zeros": bytes(64),
}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_protocols_are_never_taken_for_kafka(name: str) -> None:
    head = OTHERS[name]
    for direction in (REQ, RESP):
        assert not detect(head, direction)
    offset = find_boundary(memoryview(head), REQ, 1)
    assert offset is None or not detect(head[offset:], REQ)


def test_detection_recognises_real_requests_only_by_their_header_and_body() -> None:
    req, resp = produce(1)
    assert detect(req, REQ) and not detect(resp, RESP) and not detect(resp, REQ)
    bad_body = req[:30] + b"\x7f" * (len(req) - 30)  # the body no longer reads as Produce v9
    assert not detect(bad_body, REQ)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([REQ, RESP]), st.binary(max_size=200)), max_size=8))
def test_random_bytes_never_stop_the_loop(script: list[tuple[Direction, bytes]]) -> None:
    loop = Loop(SPEC)
    req, resp = produce(1)
    loop.feed(REQ, req)
    loop.feed(RESP, resp)
    for direction, data in script:
        if data:
            loop.feed(direction, data)
            loop.run()
    loop.run(eof=True)
    assert loop.records and loop.records[0].attributes["messaging.batch.message_count"] == 2
    assert not loop.queues[REQ] and not loop.queues[RESP]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_messages_are_bounded_and_accounted(data: st.DataObject) -> None:
    req, resp = produce(1, n=3)
    fetch_req = wire.fetch_request(12, 2, "t", [0])
    fetch_resp = wire.fetch_response(12, 2, "t", [(0, 0, wire.batch(3))])
    reqs, resps = bytearray(req + fetch_req), bytearray(resp + fetch_resp)
    for buf in (reqs, resps):
        for _ in range(data.draw(st.integers(0, 4))):
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    loop = Loop(SPEC)
    loop.feed(REQ, bytes(reqs))
    loop.feed(RESP, bytes(resps))
    loop.run(eof=True)
    assert len(loop.records) <= 2 and not loop.queues[REQ] and not loop.queues[RESP]


def test_the_registry_detects_kafka_among_every_protocol() -> None:
    """Every registered protocol's detect runs on a new connection: only Kafka claims Kafka bytes."""
    from pipeline.framing import ConnParser, Limits
    from pipeline.health import Health
    from protocols.registry import PROTOCOLS
    from tests.support.loop import Wire, conn

    info = conn()
    parser, w = ConnParser(info, PROTOCOLS, Limits(), Health()), Wire(info)
    for spec in PROTOCOLS:
        if spec.name != "kafka":
            for data in (
                wire.api_versions_request(3, 0),
                wire.produce_request(9, 1, "t", {0: wire.batch(2)}),
            ):
                assert not spec.detect(data, REQ), spec.name
    req = wire.api_versions_request(3, 0) + wire.metadata_request(12, 1, ["t"])
    resp = wire.api_versions_response(3, 0) + wire.metadata_response(12, 1, [("t", 0)])
    from probes.fragment import Io

    parser.add(w.frag(Io.RECV, req))
    parser.add(w.frag(Io.SEND, resp))
    records = parser.process(final=True)
    assert [r.name for r in records] == ["ApiVersions", "Metadata"]


def test_responses_buffered_before_detection_start_at_their_first_byte() -> None:
    """Java 4.1 consumer, coordinator connection (recorded bytes' shape): ApiVersions is numbered 8 and
    the JoinGroup it was opened for 7. Both directions were buffered before the loop detected Kafka,
    so the response stream is resynced from its first byte: it must resume there, not further on (it
    once took a later, false boundary and lost every exchange of the connection)."""
    loop = Loop(SPEC, detect=True)
    loop.feed(REQ, wire.api_versions_request(4, 8))
    loop.feed(RESP, wire.api_versions_response(4, 8))
    loop.feed(REQ, wire.group_request("JoinGroup", 9, 7, "grp"))
    loop.feed(RESP, wire.group_response("JoinGroup", 9, 7, 79))
    loop.feed(REQ, wire.group_request("SyncGroup", 5, 9, "grp"))
    loop.feed(RESP, wire.group_response("SyncGroup", 5, 9, 0))
    loop.run(eof=True)
    assert [r.name for r in loop.records] == ["ApiVersions", "JoinGroup", "SyncGroup"]
    assert loop.records[1].error_type == "MEMBER_ID_REQUIRED" and loop.health.total("unmatched_frames") == 0
