"""Read a BPF ring buffer map through mmap, without a per-record callback.

Layout (kernel/bpf/ringbuf.c, as libbpf maps it): page 0 of the map fd is the consumer page
(`consumer_pos` at offset 0, mapped read-write); from offset page_size come the producer page
(`producer_pos` at offset 0) and the data area, mapped twice back to back so a record that wraps
around the end is contiguous. Each record is an 8-byte header (u32 length with the BUSY and
DISCARD bits, u32 page offset) then the sample, padded to 8 bytes.
"""

from __future__ import annotations

import mmap
import platform
import struct
from typing import Any

__all__ = ["BUSY", "DISCARD", "HEADER", "LEN_MASK", "RingReader", "record_at", "walk"]

BUSY = 1 << 31  # reserved, not committed yet: the walk stops here
DISCARD = 1 << 30  # committed as discarded: skipped
HEADER = 8
LEN_MASK = ~(BUSY | DISCARD) & 0xFFFFFFFF
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
# Plain loads/stores order like libbpf's acquire/release only on x86 (TSO); elsewhere use bcc.
_TSO_MACHINES = ("x86_64", "AMD64", "i686", "i386")


def walk(buf: Any, base: int, mask: int, cons: int, prod: int, out: list[int]) -> int:
    """Append the buffer offset of every committed sample between positions `cons` and `prod`.

    `base` is where the data area starts in `buf`. Returns the position to store as consumer_pos:
    `prod`, or the first record still BUSY (the producer has not committed it yet).
    """
    unpack = _U32.unpack_from
    append = out.append
    while cons < prod:
        off = base + (cons & mask)
        (word,) = unpack(buf, off)
        if word & BUSY:
            break
        cons += ((word & LEN_MASK) + HEADER + 7) & ~7
        if not word & DISCARD:
            append(off + HEADER)
    return cons


def record_at(buf: Any, offset: int) -> bytes:
    """The sample whose first byte is at `offset` (as `walk` reports it), by its header's length."""
    (word,) = _U32.unpack_from(buf, offset - HEADER)
    return bytes(buf[offset : offset + (word & LEN_MASK)])


class RingReader:
    """One ring map, mmapped: `producer()` says how far the kernel wrote, `release(pos)` frees up to pos.

    Records between `consumer` and `producer()` are read in place from `buf` (`walk`, or a decoder's
    own fused loop such as probes.capture.EventDecoder.decode_ring).
    """

    def __init__(self, map_fd: int, ring_bytes: int) -> None:
        if platform.machine() not in _TSO_MACHINES:
            raise OSError(f"direct ring reads assume x86 memory ordering, not {platform.machine()}")
        page = mmap.PAGESIZE
        self._consumer = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        try:
            self.buf = mmap.mmap(map_fd, page + 2 * ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)
        except BaseException:
            self._consumer.close()
            raise
        self.base, self.mask = page, ring_bytes - 1
        (self.consumer,) = _U64.unpack_from(self._consumer, 0)

    def producer(self) -> int:
        position: int = _U64.unpack_from(self.buf, 0)[0]
        return position

    def release(self, position: int) -> None:
        """Give records up to `position` back to the kernel (one aligned 8-byte store, as libbpf does)."""
        if position != self.consumer:
            self.consumer = position
            _U64.pack_into(self._consumer, 0, position)

    def close(self) -> None:
        self.buf.close()
        self._consumer.close()
