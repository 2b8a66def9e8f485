"""One direction of one connection: bytes ordered by byte position, with explicit gaps.

Fragments may arrive out of order (CPUs, batches) or be lost (a full ring buffer). Bytes the kernel
counted but did not copy (the capture limit) are filled with zeros up to `fill_limit` so a parser can
skip a body it knows the size of; anything else missing becomes a gap that forces a resync.

`skip(n)` moves past bytes that may not have arrived yet (a body nobody needs to read): they are dropped
as they come, uncopied or missing ones included, so a large body is never buffered and is no gap.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass


@dataclass(slots=True)
class StreamStats:
    bytes_in: int = 0
    duplicate_bytes: int = 0
    filled_bytes: int = 0  # not copied by the capture, zero-filled
    gap_bytes: int = 0  # never seen: skipped
    gaps: int = 0
    skipped_bytes: int = 0  # positions passed by skip(), never buffered (uncopied and unseen ones included)


@dataclass(slots=True)
class _Piece:
    position: int
    length: int
    data: bytes
    ts_ns: int


class DataStream:
    """`head()` is the contiguous data from the read position; `consume(n)` advances past it."""

    def __init__(self, fill_limit: int = 1 << 20, max_pending_bytes: int = 4 << 20) -> None:
        self.fill_limit = fill_limit
        self.max_pending_bytes = max_pending_bytes
        self.stats = StreamStats()
        self._buf = bytearray()
        self._off = 0  # read offset into _buf
        self._base = 0  # byte position of _buf[0]
        self._started = False
        self._ends: list[int] = []  # end position of each appended piece, ascending
        self._ts: list[int] = []  # its capture timestamp
        self._filled: list[tuple[int, int]] = []  # zero-filled [start, end) ranges
        self._pending: dict[int, _Piece] = {}  # out-of-order pieces by position
        self._pending_bytes = 0
        self._lost_until: int | None = None  # bytes up to here were counted but not copied
        self.gap_crossed = False  # set when a gap was skipped; the framing loop clears it
        self.gap_ts = 0  # capture time of the last piece before the latest gap (0: unknown)
        self._lost_ts = 0  # capture time of the piece whose tail was not copied
        # skip(): positions before _skip_to are dropped as they arrive; _base is how far they have come.
        self.skipping = False
        self._skip_to = 0
        self.skip_ts = 0  # capture time of the last byte skip() passed
        self.skip_cut = False  # some byte skip() passed was not copied or never seen (the caller resets it)

    # -- positions -------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Byte position of head()[0]."""
        return self._base + self._off

    @property
    def end(self) -> int:
        """Byte position just past the contiguous data."""
        return self._base + len(self._buf)

    def __len__(self) -> int:
        return len(self._buf) - self._off

    # -- input -----------------------------------------------------------------------------------

    def add(self, position: int, length: int, data: bytes, ts_ns: int) -> None:
        self.stats.bytes_in += len(data)
        if not self._started:  # a stream joined mid-way starts where its first fragment does
            self._started = True
            self._base = position
        end = self._base + len(self._buf)
        if (
            position == end
            and length == len(data) > 0
            and not self._pending
            and self._lost_until is None
            and not self.skipping
        ):
            self._buf += data  # fast path: exactly the next bytes, all copied, nothing held back
            self._ends.append(end + length)
            self._ts.append(ts_ns)
            return
        if self.skipping:
            self._pass(_Piece(position, length, data, ts_ns))
            self._drain_pending()
            return
        if position + length <= end:
            self.stats.duplicate_bytes += length
            return
        if position > self.end or self._lost_until is not None:
            self._hold(_Piece(position, length, data, ts_ns))
            return
        self._append(position, length, data, ts_ns)
        self._drain_pending()

    def _hold(self, piece: _Piece) -> None:
        old = self._pending.get(piece.position)
        if old is not None and old.length >= piece.length:
            return
        self._pending[piece.position] = piece
        self._pending_bytes += len(piece.data)
        if self._pending_bytes > self.max_pending_bytes:
            self.cross_gap(force=True)

    def _append(self, position: int, length: int, data: bytes, ts_ns: int) -> None:
        skip = self.end - position  # overlap with what we have
        end = position + length
        if skip > 0:
            self.stats.duplicate_bytes += skip
        copied = data[skip:] if skip > 0 else data
        self._buf += copied
        missing = end - self.end
        if missing > 0:
            if missing <= self.fill_limit:
                self._filled.append((self.end, end))
                self._buf += bytes(missing)
                self.stats.filled_bytes += missing
            else:  # parse what came before; cross_gap() jumps over the rest
                self._lost_until = end
                self._lost_ts = ts_ns
        self._ends.append(self.end)
        self._ts.append(ts_ns)

    def _drain_pending(self) -> None:
        while self._pending and self._lost_until is None and not self.skipping:
            ready = [p for p in self._pending if p <= self.end]
            if not ready:
                return
            for pos in sorted(ready):
                piece = self._pending.pop(pos)
                self._pending_bytes -= len(piece.data)
                if piece.position + piece.length > self.end:
                    self._append(piece.position, piece.length, piece.data, piece.ts_ns)

    def _mark_gap(self, new_end: int) -> None:
        """Bytes up to `new_end` are lost: drop what is buffered and restart there."""
        self.stats.gaps += 1
        self.stats.gap_bytes += new_end - self.end
        self.gap_ts = self._lost_ts if self._lost_until is not None else (self._ts[-1] if self._ts else 0)
        self._buf.clear()
        self._off = 0
        self._base = new_end
        self._ends.clear()
        self._ts.clear()
        self._filled.clear()
        self._lost_until = None
        self.skipping = False
        self.gap_crossed = True

    def cross_gap(self, force: bool = False) -> bool:
        """Jump over known-lost bytes (or, with force, a hole); the unparsed head is dropped."""
        if self._lost_until is not None:
            target = self._lost_until
        elif force and self._pending:
            target = min(self._pending)
        else:
            return False
        self._mark_gap(target)
        self._drain_pending()
        return True

    @property
    def blocked(self) -> bool:
        """Nothing more can arrive contiguously: known-lost bytes, or held pieces behind a hole."""
        return self._lost_until is not None or bool(self._pending)

    # -- output ----------------------------------------------------------------------------------

    def head(self) -> memoryview:
        """The contiguous bytes; release the view before calling add() (bytearray cannot resize)."""
        return memoryview(self._buf)[self._off :]

    def consume(self, n: int) -> None:
        self._off += min(n, len(self))
        if self._off > 65536 and self._off * 2 > len(self._buf):
            self._compact()

    def skip(self, n: int) -> None:
        """Move the read position `n` bytes on, whether they have arrived or not: those still to come are
        dropped as they arrive (`skipping` until the last has). Sets `skip_ts` and `skip_cut`."""
        start, have = self.position, len(self)
        take = min(max(n, 0), have)
        if take:
            self.skip_ts = self.ts_at(start + take - 1)
            if self._filled and self.filled_between(start, start + take):
                self.skip_cut = True
            self.consume(take)
            self.stats.skipped_bytes += take
        if n <= take:
            return
        self._restart(start + have)  # everything buffered was passed: go on where the copied bytes end
        self.skipping, self._skip_to = True, start + n
        if self._lost_until is not None:  # counted, not copied: inside the body that is harmless
            lost, self._lost_until = self._lost_until, None
            self._pass(_Piece(self._base, lost - self._base, b"", self._lost_ts))
        for pos in sorted(self._pending):
            if not self.skipping:
                break
            piece = self._pending.pop(pos)
            self._pending_bytes -= len(piece.data)
            self._pass(piece)
        self._drain_pending()

    def _restart(self, position: int) -> None:
        """An empty buffer at `position` (the times and fills of what it held are no longer needed)."""
        self._buf.clear()
        self._off = 0
        self._base = position
        self._ends.clear()
        self._ts.clear()
        self._filled.clear()

    def _pass(self, piece: _Piece) -> None:
        """A piece arriving while skipping: drop what lies before the skip target, keep the rest."""
        target, end = self._skip_to, piece.position + piece.length
        if end <= self._base:
            self.stats.duplicate_bytes += piece.length
            return
        if piece.position > self._base:  # bytes never seen: within the skipped span only a hole in it
            self.skip_cut = True
            if piece.position >= target:  # the span ended unseen; what follows is data again
                self.stats.skipped_bytes += target - self._base
                self._end_skip(target)
                self._hold(piece)
                return
        stop = min(end, target)
        if piece.position + len(piece.data) < stop:
            self.skip_cut = True
        self.stats.skipped_bytes += stop - self._base
        self.skip_ts = piece.ts_ns
        if end < target:
            self._base = end
            return
        self._end_skip(target)
        if end > target:  # the next message starts within this piece
            self._append(target, end - target, piece.data[target - piece.position :], piece.ts_ns)

    def _end_skip(self, target: int) -> None:
        self.skipping = False
        self._restart(target)

    def discard_all_but(self, keep: int) -> None:
        if len(self) > keep:
            self.consume(len(self) - keep)

    def _compact(self) -> None:
        del self._buf[: self._off]
        self._base += self._off
        self._off = 0
        cut = bisect_right(self._ends, self._base)
        del self._ends[:cut]
        del self._ts[:cut]
        self._filled = [(s, e) for s, e in self._filled if e > self._base]

    def ts_at(self, position: int) -> int:
        """Capture time of the fragment holding the byte at `position`."""
        i = bisect_right(self._ends, position)
        if i < len(self._ts):
            return self._ts[i]
        return self._ts[-1] if self._ts else 0

    @property
    def has_filled(self) -> bool:
        return bool(self._filled)

    def filled_between(self, start: int, end: int) -> bool:
        return any(s < end and start < e for s, e in self._filled)
