"""detect mid-connection with the compressed protocol on (DeepFlow's mysql-compressed-response)."""

from __future__ import annotations

from protocols.base import Direction
from protocols.mysql.parse import detect

# Exact heads from the capture: a stored (ulen 0) compressed COM_QUERY, and a zlib-compressed result set.
REQUEST = b"-\x00\x00\x00\x00\x00\x00)\x00\x00\x00\x03SELECT * FROM `az_controller_connection`"
RESPONSE = b"o\x01\x00\x01\xe3\x03\x00x\x9c\xa5\x92\xcf\x8bT1\x0c\xc73o\xdc\xdf\xe3\xdd\xb3\xbck\x86&m"


def test_compressed_packets_are_mysql_in_their_direction() -> None:
    assert detect(REQUEST, Direction.REQUEST)
    assert detect(RESPONSE, Direction.RESPONSE)


def test_zlib_magic_alone_is_not_enough() -> None:
    # Compressed length far beyond the uncompressed one: not a compressed packet.
    assert not detect(b"\xff\xff\x00\x01\x05\x00\x00x\x9c" + b"\x00" * 20, Direction.RESPONSE)
    assert not detect(b"\x00\x00\x00\x00\x00\x00\x00x\x9c" + b"\x00" * 20, Direction.RESPONSE)
