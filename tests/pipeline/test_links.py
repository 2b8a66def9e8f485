"""Producer -> consumer links (pipeline/links.py) on records the Kafka protocol made through the real
framing loop: a consumer's Fetch links to the Produce that wrote the batches it read."""

from __future__ import annotations

import pytest

from pipeline.links import Linker
from pipeline.otlp import build_trace_request, span_ids
from protocols.base import L7Record, Role
from protocols.kafka import SPEC
from tests.protocols.kafka import wire
from tests.support.loop import REQ, RESP, Loop

pytestmark = pytest.mark.unit


def exchange(req: bytes, resp: bytes, role: Role, conn_id: str) -> L7Record:
    from tests.support.loop import conn

    loop = Loop(SPEC, info=conn(role, conn_id=conn_id))
    loop.feed(REQ, req)
    loop.feed(RESP, resp)
    loop.run(eof=True)
    assert len(loop.records) == 1 and loop.errors == []
    return loop.records[0]


def produce(offset: int, role: Role = Role.CLIENT, conn_id: str = "n/1/1/1") -> L7Record:
    req = wire.produce_request(9, offset, "orders", {0: wire.batch(3)})
    return exchange(req, wire.produce_response(9, offset, "orders", [(0, 0, offset)]), role, conn_id)


def fetch(*bases: int) -> L7Record:
    records = b"".join(wire.batch(3, base=b) for b in bases)
    req = wire.fetch_request(12, 7, "orders", [0])
    return exchange(req, wire.fetch_response(12, 7, "orders", [(0, 0, records)]), Role.CLIENT, "n/2/2/2")


def ids(r: L7Record) -> tuple[str, str]:
    trace_id, span_id, _ = span_ids(r)
    return trace_id.hex(), span_id.hex()


def test_a_fetch_links_to_the_produces_that_wrote_its_batches() -> None:
    first, second = produce(100, conn_id="n/1/1/1"), produce(103, conn_id="n/1/1/2")
    consumer = fetch(100, 103, 106)  # 106: written before the capture began
    assert first.produced == ("kafka/orders/0/100",) and consumer.consumed[0] == "kafka/orders/0/100"
    linker = Linker()
    linker.link([first, second])
    linker.link([consumer])
    assert consumer.links == (ids(first), ids(second))
    span = build_trace_request([consumer]).resource_spans[0].scope_spans[0].spans[0]
    assert [(link.trace_id.hex(), link.span_id.hex()) for link in span.links] == [ids(first), ids(second)]


def test_the_producing_application_is_preferred_to_the_broker() -> None:
    client, broker = produce(100, Role.CLIENT, "n/1/1/1"), produce(100, Role.SERVER, "n/9/9/9")
    linker = Linker()
    linker.link([client, broker])
    consumer = fetch(100)
    linker.link([consumer])
    assert consumer.links == (ids(client),)


def test_writers_are_bounded_oldest_forgotten_first() -> None:
    linker = Linker(capacity=2)
    writers = [produce(base, conn_id=f"n/1/1/{base}") for base in (100, 103, 106)]
    linker.link(writers)
    consumer = fetch(100, 103, 106)
    linker.link([consumer])
    assert consumer.links == (ids(writers[1]), ids(writers[2]))


def test_a_writer_naming_the_topic_by_id_meets_a_reader_naming_it_by_name() -> None:
    """The Java producer (Produce v13, topic id, no Metadata on its connection) and a consumer whose
    connection's Metadata response gave both the name and the id: the batch keys meet on the id."""
    from tests.support.loop import conn

    req = wire.produce_request(13, 1, "", {0: wire.batch(3)})
    writer = exchange(req, wire.produce_response(13, 1, "", [(0, 0, 500)]), Role.CLIENT, "n/1/1/1")
    assert writer.produced == (f"kafka/{wire.TOPIC_ID.hex()}/0/500",)
    loop = Loop(SPEC, info=conn(Role.CLIENT, conn_id="n/2/2/2"))
    loop.feed(REQ, wire.metadata_request(12, 1, ["orders"]))
    loop.feed(RESP, wire.metadata_response(12, 1, [("orders", 0)]))
    loop.feed(REQ, wire.fetch_request(12, 2, "orders", [0]))
    loop.feed(RESP, wire.fetch_response(12, 2, "orders", [(0, 0, wire.batch(3, base=500))]))
    loop.run(eof=True)
    reader = loop.records[-1]
    assert reader.consumed == ("kafka/orders/0/500", f"kafka/{wire.TOPIC_ID.hex()}/0/500")
    linker = Linker()
    linker.link([writer])
    linker.link([reader])
    assert reader.links == (ids(writer),)
