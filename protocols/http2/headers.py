"""HPACK decoding for one direction, with a fallback for when the dynamic table is not known.

In sync, the `hpack` package decodes, and blocks that leave the table untouched are cached (steady
gRPC traffic repeats the same indexed blocks). After a gap or a mid-stream join the table is unknown:
blocks are then walked leniently, keeping static-table and literal fields, plus the entries inserted
since the desync (they sit at the front of the real table, so their indexes are right). A reference
beyond them is reported as missing, never guessed. Once the inserted entries alone fill the table,
every entry is known again and decoding goes back to `hpack`.
"""

from __future__ import annotations

from itertools import islice

from hpack import Decoder
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

DEFAULT_TABLE = 4096
MAX_TABLE = 1 << 20  # largest dynamic table we agree to model (SETTINGS may announce up to 2^32-1)
MAX_LIST = 64 * 1024  # decoded header list size bound per block
MAX_FIELDS = 128
CACHE_MAX = 256
CACHE_BLOCK_MAX = 1024  # only small blocks are cached, so the cache stays under CACHE_MAX KiB
_STATIC = HeaderTable.STATIC_TABLE
_NSTATIC = len(_STATIC)

Headers = tuple[tuple[str, str], ...]


class _Malformed(Exception):
    """The block cannot be walked further."""


def _int(block: bytes, i: int, prefix: int) -> tuple[int, int]:
    """Decode an HPACK integer whose prefix starts at block[i]; returns (value, next index)."""
    mask = (1 << prefix) - 1
    value = block[i] & mask
    i += 1
    if value < mask:
        return value, i
    shift = 0
    while True:
        if i >= len(block) or shift > 28:
            raise _Malformed("integer")
        b = block[i]
        i += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _str(block: bytes, i: int) -> tuple[bytes, int]:
    if i >= len(block):
        raise _Malformed("string")
    huff = block[i] & 0x80
    length, i = _int(block, i, 7)
    end = i + length
    if end > len(block):
        raise _Malformed("string length")
    raw = block[i:end]
    if huff:
        try:
            raw = decode_huffman(raw)
        except Exception as err:  # hpack raises its own error types on bad Huffman codes
            raise _Malformed("huffman") from err
    return raw, end


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


class HpackSide:
    """The decoding context of one direction of one connection."""

    __slots__ = ("cache", "decoder", "known", "known_size", "max_allowed", "maxsize", "synced")

    def __init__(self) -> None:
        self.decoder: Decoder | None = _new_decoder(DEFAULT_TABLE, DEFAULT_TABLE)
        self.synced = True
        self.known: list[tuple[bytes, bytes]] = []  # desynced: newest-first entries known to be in front
        self.known_size = 0
        self.maxsize = DEFAULT_TABLE  # desynced: the table size we assume
        self.max_allowed = DEFAULT_TABLE
        self.cache: dict[bytes, Headers] = {}

    def set_max_allowed(self, size: int) -> None:
        """The peer decoding this direction announced SETTINGS_HEADER_TABLE_SIZE."""
        self.max_allowed = max(DEFAULT_TABLE, min(size, MAX_TABLE))
        if self.decoder is not None:
            self.decoder.max_allowed_table_size = self.max_allowed

    def desync(self) -> None:
        """Forget the dynamic table: bytes were lost or the connection was joined mid-stream."""
        if self.decoder is not None:
            self.maxsize = self.decoder.header_table.maxsize
        self.decoder = None
        self.synced = False
        self.known = []
        self.known_size = 0
        self.cache.clear()

    def decode(self, block: bytes) -> tuple[Headers, bool]:
        """Decode a complete header block: (fields, complete). Incomplete = some fields unknown."""
        decoder = self.decoder
        if decoder is None:
            return self._walk(block)
        hit = self.cache.get(block)
        if hit is not None:
            return hit, True
        table = decoder.header_table
        entries = table.dynamic_entries
        first = entries[0] if entries else None
        count = len(entries)
        size = table.maxsize
        try:
            raw = decoder.decode(block, raw=True)
        except Exception:  # hpack raises several error types on bad or desynced input
            self.desync()
            self.maxsize = size
            return self._walk(block)
        headers = tuple((_text(n), _text(v)) for n, v in islice(raw, MAX_FIELDS))
        # The table is unchanged iff size, length and newest entry (held by us, so never reused) are.
        newest = entries[0] if entries else None
        unchanged = count == len(entries) and size == table.maxsize and newest is first
        if unchanged and len(block) <= CACHE_BLOCK_MAX:
            if len(self.cache) >= CACHE_MAX:
                self.cache.clear()
            self.cache[block] = headers
        elif not unchanged and self.cache:
            self.cache.clear()
        return headers, True

    # -- desynced mode ---------------------------------------------------------------------------

    def _entry(self, index: int) -> tuple[bytes, bytes] | None:
        if index <= 0:
            raise _Malformed("index 0")
        if index <= _NSTATIC:
            return _STATIC[index - 1]
        index -= _NSTATIC + 1
        return self.known[index] if index < len(self.known) else None

    def _walk(self, block: bytes) -> tuple[Headers, bool]:
        out: list[tuple[str, str]] = []
        complete = True
        full = False
        i, n = 0, len(block)
        try:
            while i < n:
                b = block[i]
                if b & 0x80:
                    index, i = _int(block, i, 7)
                    entry = self._entry(index)
                    if entry is None:
                        complete = False
                    elif len(out) < MAX_FIELDS:
                        out.append((_text(entry[0]), _text(entry[1])))
                elif b & 0x40 or not b & 0x20:
                    indexing = bool(b & 0x40)
                    name_index, i = _int(block, i, 6 if indexing else 4)
                    name: bytes | None
                    if name_index:
                        entry = self._entry(name_index)
                        name = entry[0] if entry is not None else None
                    else:
                        name, i = _str(block, i)
                    value, i = _str(block, i)
                    if name is None:
                        complete = False
                    elif len(out) < MAX_FIELDS:
                        out.append((_text(name), _text(value)))
                    if indexing:
                        full = self._insert(name, value) or full
                else:
                    new_size, i = _int(block, i, 5)
                    full = self._resize(new_size) or full
        except _Malformed:
            self.known = []  # the rest of the block (and its insertions) is lost
            self.known_size = 0
            return tuple(out), False
        if full:
            self._resync()
        return tuple(out), complete

    def _insert(self, name: bytes | None, value: bytes) -> bool:
        """Model an insertion; True when the known entries now account for the whole table."""
        if name is None:
            self.known = []  # an entry of unknown size: eviction can no longer be modelled
            self.known_size = 0
            return False
        size = len(name) + len(value) + 32
        if size > self.maxsize:
            self.known = []
            self.known_size = 0
            return True
        self.known.insert(0, (bytes(name), bytes(value)))
        self.known_size += size
        return self._shrink()

    def _resize(self, new_size: int) -> bool:
        self.maxsize = min(new_size, MAX_TABLE)
        return self._shrink()

    def _shrink(self) -> bool:
        evicted = False
        while self.known and self.known_size > self.maxsize:
            name, value = self.known.pop()
            self.known_size -= len(name) + len(value) + 32
            evicted = True
        # Every unknown (older) entry takes >= 32 bytes: none fits beside the known ones.
        return evicted or self.known_size + 32 > self.maxsize

    def _resync(self) -> None:
        decoder = _new_decoder(self.maxsize, self.max_allowed)
        table = decoder.header_table
        table.dynamic_entries.extend(self.known)
        table._current_size = self.known_size  # hpack keeps the size privately; it must match the entries
        self.decoder = decoder
        self.synced = True
        self.known = []
        self.known_size = 0


def _new_decoder(table_size: int, max_allowed: int) -> Decoder:
    decoder = Decoder(max_header_list_size=MAX_LIST)
    decoder.max_allowed_table_size = max(max_allowed, table_size)
    decoder.header_table_size = table_size
    return decoder
