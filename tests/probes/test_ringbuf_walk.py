"""The ring walker over a synthetic ring laid out as the kernel's (data area mapped twice)."""

from __future__ import annotations

import struct

from probes.ringbuf import BUSY, DISCARD, HEADER, record_at, walk

RING = 256  # bytes of data area (a power of two, as the kernel requires)
BASE = 64  # where the data area starts in the buffer, like the producer page before it


class SyntheticRing:
    """Writes records at ring positions; `buffer()` is the mapping the reader sees."""

    def __init__(self, start: int = 0, size: int = RING) -> None:
        self.data = bytearray(size)
        self.prod = start

    def put(self, sample: bytes, flags: int = 0) -> int:
        pos = self.prod
        raw = struct.pack("=II", len(sample) | flags, 0) + sample
        for i, b in enumerate(raw):
            self.data[(pos + i) % len(self.data)] = b
        self.prod += (len(raw) + 7) & ~7
        return pos

    def set_flags(self, pos: int, flags: int) -> None:
        at = pos % len(self.data)
        (word,) = struct.unpack_from("=I", self.data, at)
        struct.pack_into("=I", self.data, at, (word & ~(BUSY | DISCARD)) | flags)

    def buffer(self) -> bytes:
        return bytes(BASE) + bytes(self.data) + bytes(self.data)  # the double mapping


def read(ring: SyntheticRing, cons: int) -> tuple[list[bytes], int]:
    buf, offsets = ring.buffer(), []
    new_cons = walk(buf, BASE, RING - 1, cons, ring.prod, offsets)
    return [record_at(buf, off) for off in offsets], new_cons


def test_records_in_order_with_padding() -> None:
    ring = SyntheticRing()
    samples = [b"a", b"bcdefghi", b"x" * 13, b""]
    for s in samples:
        ring.put(s)
    got, cons = read(ring, 0)
    assert got == samples
    assert cons == ring.prod == (8 + 8) + (8 + 8) + (8 + 16) + 8


def test_record_wrapping_around_the_end_is_contiguous() -> None:
    start = RING - 24  # header at 232, sample spans 240..255 then 0..
    ring = SyntheticRing(start=start + 3 * RING)  # positions keep growing past the ring size
    payload = bytes(range(40))
    ring.put(payload)
    ring.put(b"after")
    got, cons = read(ring, start + 3 * RING)
    assert got == [payload, b"after"]
    assert cons == ring.prod


def test_discarded_records_are_skipped_but_consumed() -> None:
    ring = SyntheticRing()
    ring.put(b"one")
    ring.put(b"dropped!", flags=DISCARD)
    ring.put(b"three")
    got, cons = read(ring, 0)
    assert got == [b"one", b"three"] and cons == ring.prod


def test_busy_record_stops_the_walk_until_committed() -> None:
    ring = SyntheticRing()
    ring.put(b"first")
    busy_at = ring.put(b"reserved", flags=BUSY)
    ring.put(b"third")  # committed, but behind a busy record: must wait
    got, cons = read(ring, 0)
    assert got == [b"first"] and cons == busy_at
    ring.set_flags(busy_at, 0)  # the producer commits it
    got, cons = read(ring, cons)
    assert got == [b"reserved", b"third"] and cons == ring.prod


def test_empty_ring_returns_the_same_position() -> None:
    ring = SyntheticRing(start=128)
    assert read(ring, 128) == ([], 128)


def test_header_size() -> None:
    assert HEADER == 8


def test_decoder_fused_walk_matches_walk_then_decode() -> None:
    """EventDecoder.decode_ring (the agent's loop) over wrap, discard and busy records."""
    from probes.capture import KIND_CLOSE, KIND_DATA, KIND_OPEN, EventDecoder
    from tests.probes.test_capture_units import record

    big = bytes(range(97))
    size = 1024  # room for the four records; the second one crosses the end
    ring = SyntheticRing(start=size * 5 + size - 160, size=size)
    start = ring.prod
    ring.put(record(KIND_OPEN))
    ring.put(record(KIND_DATA, pos=0, length=97, data=big))  # crosses the end of the ring
    ring.put(record(KIND_DATA, pos=97, length=1, data=b"x"), flags=DISCARD)
    busy_at = ring.put(record(KIND_CLOSE, pos=97, length=0), flags=BUSY)
    buf = ring.buffer()
    fused = EventDecoder("n")
    events, cons, records = fused.decode_ring(buf, BASE, size - 1, start, ring.prod)
    assert cons == busy_at and records == 2
    offsets: list[int] = []
    walk(buf, BASE, size - 1, start, ring.prod, offsets)
    plain = EventDecoder("n")
    plain.epoch_offset_ns = fused.epoch_offset_ns
    assert events == plain.decode([record_at(buf, off) for off in offsets])
    assert events[1].data == big  # type: ignore[union-attr]
    ring.set_flags(busy_at, 0)
    closed, cons, records = fused.decode_ring(ring.buffer(), BASE, size - 1, cons, ring.prod)
    assert cons == ring.prod and records == 1 and closed[0].closed  # type: ignore[union-attr]
