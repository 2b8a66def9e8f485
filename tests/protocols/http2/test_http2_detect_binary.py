"""detect must not take zero-rich binary protocols (MySQL result sets) for HTTP/2 joined mid-stream."""

from __future__ import annotations

from hpack import Encoder
from hyperframe.frame import DataFrame, HeadersFrame, WindowUpdateFrame

from protocols.base import Direction
from protocols.http2.parse import detect

REQ, RESP = Direction.REQUEST, Direction.RESPONSE

# MariaDB/MySQL server bytes from the DeepFlow corpus (mysql-table-create.pcap, binary-in-sql.pcap):
# a column definition, and an OK packet followed by more packets.
COLUMN_DEF = b"\x00\x00\x01\x01 \x00\x00\x02\x03def\x00\x00\x00\nDATABASE()\x00\x0c!\x00"
OK_PACKETS = b"\x00\x00\x01\x00\x00\x00\x00@\x00\x00\x00\x00\x08\x00\x00\x01\x00\x01\x00\x01\x00\x00\x00\x00"
GREETING_TAIL = b"\x00\x00\x1f\x00\x00\x1d\x00\x00\x03\x1cMySQL Community Server - GPL\x07\x00" + b"\x00" * 8


def test_headers_with_priority_flag_needs_five_bytes() -> None:
    # HEADERS, flags PRIORITY, length 1: RFC 9113 6.2 needs 5 priority bytes, so no HTTP/2 frame.
    assert not detect(COLUMN_DEF, RESP)
    assert not detect(COLUMN_DEF, REQ)


def test_data_only_chains_and_far_apart_stream_ids_are_not_http2() -> None:
    for data in (OK_PACKETS, GREETING_TAIL):
        assert not detect(data, RESP), data
        assert not detect(data, REQ), data


def test_real_mid_stream_frames_still_detected() -> None:
    headers = HeadersFrame(7, Encoder().encode([(":status", "200")]), flags=["END_HEADERS"]).serialize()
    data = DataFrame(7, b"x" * 300).serialize() + DataFrame(9, b"y" * 20, flags=["END_STREAM"]).serialize()
    assert detect(headers + data + WindowUpdateFrame(0, window_increment=320).serialize(), RESP)
    assert detect(DataFrame(1001, b"z" * 10).serialize() + headers, RESP)
    assert not detect(data, RESP)  # DATA alone is too weak a sign mid-stream
