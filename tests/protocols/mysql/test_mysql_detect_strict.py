"""detect/find_boundary on other protocols' bytes: the windows that used to look like MySQL packets."""

from __future__ import annotations

from protocols.base import Direction
from protocols.mysql.parse import detect, find_boundary

REQ, RESP = Direction.REQUEST, Direction.RESPONSE


def test_ok_packet_followed_by_a_seq_0_packet_is_not_an_answer() -> None:
    # Inside a Kafka ApiVersions response: "length 9, seq 1, 0x00" then a header with seq 0.
    data = b"\t\x00\x00\x01\x00\x00\x00\r\x00\x00\x03\x00\x00\x00\x0c\x00\x00\x12\x00\x00\x00\x03\x00\x00"
    assert not detect(data, RESP)


def test_long_ok_packet_is_no_sign() -> None:
    assert not detect(b"\x00\x0b\x00\x01\x00\x00\x00\x02\x00\x00\x00" + b"x" * 20, RESP)
    assert detect(b"\x07\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00", RESP)  # a real OK still is


def test_one_byte_command_followed_by_a_non_command_is_not_mysql() -> None:
    assert not detect(b"\x01\x00\x00\x00\r\x00\x00\x03\x00\x00\x00\x0c", REQ)  # Kafka bytes
    assert detect(b"\x01\x00\x00\x00\x0e\x01\x00\x00\x00\x01", REQ)  # PING then QUIT


def test_binary_or_deprecated_commands_are_no_sign() -> None:
    assert not detect(b"S\x00\x00\x00\x18server_version\x0016.2\x00" + bytes(40), REQ)  # SEND_LONG_DATA
    assert not detect(b"Z\x00\x00\x00\x05IT\x00\x00\x00!\x00\x01?column?\x00", REQ)  # CREATE_DB
    assert not detect(b"\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00D\x00\x00", REQ)  # FIELD_LIST, no name
    assert not detect(b"u\x00\x00\x00\x11\x00\x0f\x00\x00\x0cexample.test\x00", REQ)  # CHANGE_USER, no user
    assert detect(b"\x0c\x00\x00\x00\x04test_table\x00", REQ)  # a real COM_FIELD_LIST


def test_find_boundary_skips_them() -> None:
    junk = b"\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00D\x00\x00\x00\x0b"
    query = b"\x09\x00\x00\x00\x03SELECT 1"
    assert find_boundary(memoryview(junk + query), REQ, 0) == len(junk)
