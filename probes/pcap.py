"""Replay source: a pcap/pcapng capture, reassembled per TCP direction into `Fragment`s and `ConnEvent`s.

A capture is one vantage point, so each connection is represented once from its *server's* side:
local = server, remote = client, role = SERVER; client->server bytes are `Io.RECV`, server->client
bytes are `Io.SEND`. Positions are byte offsets within a direction (from the SYN when seen, else
from the first byte seen). Retransmissions are dropped, out-of-order segments are buffered (bounded)
and reordered, and a segment that never arrives leaves a gap in positions rather than fake bytes.

Both classic pcap and pcapng are read straight from a memory map, with exact integer timestamps.
A file that is no capture at all raises `CaptureFileError` before any event. A damaged one (cut short,
or a block or record whose length is impossible) is read up to the damage, its connections flushed,
and the damage kept in `PcapReader.damage` and counted; so are packets of unsupported link types.
No record or block longer than 16 MiB is accepted, so a corrupt length never allocates more.
"""

from __future__ import annotations

import logging
import mmap
import os
import socket
import stat
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dpkt

from probes.fragment import ConnEvent, Fragment, Io, Source
from probes.health import Health
from protocols.base import ConnInfo, Endpoint, Role

log = logging.getLogger("l7scope.pcap")

Event = Fragment | ConnEvent
Progress = Callable[[int, int], None]  # (bytes read, file size)

# Link types (LINKTYPE_* values as stored in capture files).
LT_NULL, LT_ETHERNET, LT_RAW_BSD, LT_RAW_OPENBSD = 0, 1, 12, 14
LT_RAW, LT_LOOP, LT_LINUX_SLL, LT_IPV4, LT_IPV6, LT_LINUX_SLL2 = 101, 108, 113, 228, 229, 276

_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_ACK = 0x01, 0x02, 0x04, 0x10
_ETH_IPV4, _ETH_IPV6, _VLAN_TAGS = 0x0800, 0x86DD, (0x8100, 0x88A8, 0x9100)
_IPV6_EXT_HEADERS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped over
_IPV6_FRAGMENT = 44
_U32 = 0xFFFFFFFF
_PROGRESS_EVERY = 4096  # packets between progress callbacks

_u16 = struct.Struct("!H").unpack_from
_tcp_hdr = struct.Struct("!HHIIBB").unpack_from  # sport, dport, seq, ack, data offset, flags


@dataclass(slots=True)
class PcapStats:
    packets: int = 0
    tcp_packets: int = 0
    skipped: int = 0  # not IPv4/IPv6 TCP, IP fragments, or malformed
    connections: int = 0
    retransmitted_bytes: int = 0  # duplicate payload dropped
    gap_bytes: int = 0  # positions skipped because the segment never appeared in the capture
    reordered_segments: int = 0
    unsupported_packets: int = 0  # on an interface whose link type is not read (also in `packets`)


# ---------------------------------------------------------------------------------------------------
# Reading packets: (ts_ns, frame bytes) from the file, then the TCP/IP headers from each frame.


def _ip_offset(buf: bytes, linktype: int) -> int:
    """Offset of the IP header in a link-layer frame, or -1 when the frame carries no IP."""
    if linktype == LT_ETHERNET:
        off, etype = 14, _u16(buf, 12)[0] if len(buf) >= 14 else 0
        while etype in _VLAN_TAGS and len(buf) >= off + 4:
            etype, off = _u16(buf, off + 2)[0], off + 4
        return off if etype in (_ETH_IPV4, _ETH_IPV6) else -1
    if linktype == LT_LINUX_SLL:
        return 16 if len(buf) >= 16 and _u16(buf, 14)[0] in (_ETH_IPV4, _ETH_IPV6) else -1
    if linktype == LT_LINUX_SLL2:
        return 20 if len(buf) >= 20 and _u16(buf, 0)[0] in (_ETH_IPV4, _ETH_IPV6) else -1
    if linktype in (LT_NULL, LT_LOOP):
        return 4
    if linktype in (LT_RAW, LT_RAW_BSD, LT_RAW_OPENBSD, LT_IPV4, LT_IPV6):
        return 0
    return -1


@dataclass(slots=True)
class _Segment:
    src: bytes
    sport: int
    dst: bytes
    dport: int
    seq: int
    ack: int
    flags: int
    payload: bytes  # the captured prefix of the TCP payload
    length: int  # the payload's true length per the IP header (> len(payload) when snapped)


def parse_tcp(buf: bytes, linktype: int) -> _Segment | None:
    """The TCP segment in one captured frame, or None for anything else (incl. IP fragments)."""
    off = _ip_offset(buf, linktype)
    if off < 0 or len(buf) < off + 20:
        return None
    version = buf[off] >> 4
    if version == 4:
        ihl = (buf[off] & 0x0F) * 4
        total = _u16(buf, off + 2)[0]
        if buf[off + 9] != 6 or _u16(buf, off + 6)[0] & 0x3FFF:  # not TCP, or a fragment
            return None
        src, dst = buf[off + 12 : off + 16], buf[off + 16 : off + 20]
        tcp = off + ihl
        # tot_len 0 appears for segmentation-offloaded frames: trust the captured length then.
        end = off + total if total else len(buf)
    elif version == 6:
        if len(buf) < off + 40:
            return None
        plen = _u16(buf, off + 4)[0]
        nxt = buf[off + 6]
        src, dst = buf[off + 8 : off + 24], buf[off + 24 : off + 40]
        tcp = off + 40
        end = tcp + plen if plen else len(buf)
        while nxt in _IPV6_EXT_HEADERS and len(buf) >= tcp + 8:
            nxt, tcp = buf[tcp], tcp + (buf[tcp + 1] + 1) * 8
        if nxt != 6:  # includes _IPV6_FRAGMENT
            return None
    else:
        return None
    if len(buf) < tcp + 20:
        return None
    sport, dport, seq, ack, doff, flags = _tcp_hdr(buf, tcp)
    data = tcp + (doff >> 4) * 4
    length = max(0, end - data)
    return _Segment(src, sport, dst, dport, seq, ack, flags, buf[data : min(end, len(buf))], length)


_PCAP_MAGICS = {
    dpkt.pcap.TCPDUMP_MAGIC: ("<", 1000),
    dpkt.pcap.TCPDUMP_MAGIC_NANO: ("<", 1),
    dpkt.pcap.PMUDPCT_MAGIC: (">", 1000),
    dpkt.pcap.PMUDPCT_MAGIC_NANO: (">", 1),
}

# pcapng block types and interface options (the pcapng specification, draft-ietf-opsawg-pcapng).
_NG_SHB, _NG_IDB, _NG_PB, _NG_SPB, _NG_EPB = 0x0A0D0D0A, 1, 2, 3, 6
_NG_BOM, _NG_BOM_SWAPPED = 0x1A2B3C4D, 0x4D3C2B1A
_NG_OPT_NAME, _NG_OPT_TSRESOL, _NG_OPT_TSOFFSET = 2, 9, 14
_MAX_IFACE_NAME = 64

# Reasons a capture file is not read in full: Health `capture_file_errors` (label "pcap") counts each
# damaged file and each unsupported link type; `capture_lost_events` (label "pcap") counts the packets
# of unsupported link types, so they show in `l7scope.capture.dropped`.
TRUNCATED, CORRUPT, UNSUPPORTED = "truncated", "corrupt block", "unsupported link type"
SUPPORTED_LINKTYPES = frozenset(
    (
        LT_NULL,
        LT_ETHERNET,
        LT_RAW_BSD,
        LT_RAW_OPENBSD,
        LT_RAW,
        LT_LOOP,
        LT_LINUX_SLL,
        LT_IPV4,
        LT_IPV6,
        LT_LINUX_SLL2,
    )
)
_LINKTYPE_NAMES = {
    105: "IEEE802_11",
    127: "IEEE802_11_RADIOTAP",
    189: "USB_LINUX",
    220: "USB_LINUX_MMAPPED",
    239: "NFLOG",
}
_MAX_RECORD = 16 << 20  # a longer packet record or block is corrupt: memory stays bounded
_MAX_IFACES = 1 << 16  # interfaces per pcapng section (the obsolete Packet Block has a 16-bit interface id)
_MAX_TS_NS = (1 << 63) - 1  # pcapng timestamps are clamped to what every exporter can encode


class CaptureFileError(ValueError):
    """The file cannot be replayed at all: missing, not a regular file, unreadable, not a pcap/pcapng
    file, or cut short in its file header. Raised before any event; the message says what to do."""


@dataclass(frozen=True, slots=True)
class CaptureDamage:
    """Where a capture file stops being readable: everything before `offset` was read, nothing after."""

    offset: int
    reason: str  # TRUNCATED or CORRUPT
    detail: str


class _Damaged(Exception):
    def __init__(self, offset: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.damage = CaptureDamage(offset, reason, detail)


def _file_type(st_mode: int) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a pipe"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(st_mode):
            return name
    return "not a regular file"


def check_capture(path: str | os.PathLike[str]) -> str:
    """ "pcap" or "pcapng" when `path` is a capture file replay can open, else `CaptureFileError`.

    Only the file and its first header are looked at: damage further in is found (and reported) by
    the read itself, after everything before it was processed.
    """
    name = os.fspath(path)
    try:
        st = os.stat(name)
    except FileNotFoundError:
        raise CaptureFileError(f"{name} does not exist: name a pcap or pcapng file") from None
    except OSError as e:
        raise CaptureFileError(
            f"cannot read {name} ({e.strerror}): name a pcap or pcapng file you can read"
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise CaptureFileError(f"{name} is a directory: name a pcap or pcapng file")
    if not stat.S_ISREG(st.st_mode):
        raise CaptureFileError(
            f"{name} is {_file_type(st.st_mode)}: name a pcap or pcapng file (save a stream to one first)"
        )
    if st.st_size == 0:
        raise CaptureFileError(f"{name} is empty: name a capture written by tcpdump -w or Wireshark")
    try:
        with open(name, "rb") as fh:
            head = fh.read(28)
            kind = _header_kind(name, head, st.st_size)
            if kind == "pcapng":
                order = "<" if struct.unpack_from("<I", head, 8)[0] == _NG_BOM else ">"
                (blen,) = struct.unpack_from(order + "I", head, 4)
                fh.seek(blen - 4)
                if fh.read(4) != head[4:8]:
                    raise CaptureFileError(
                        f"{name} is not a readable pcapng file (its section header's two lengths differ): "
                        "name a capture written by tcpdump -w or Wireshark"
                    )
            return kind
    except OSError as e:
        raise CaptureFileError(
            f"cannot read {name} ({e.strerror}): fix its permissions or run as a user who can read it"
        ) from None


def _header_kind(name: str, head: bytes, size: int) -> str:
    """The capture format from a file's first 28 bytes (fewer when the file is shorter)."""
    if head[:2] == b"\x1f\x8b":
        raise CaptureFileError(f"{name} is gzip-compressed: decompress it first (gunzip -k {name})")
    magic = struct.unpack_from("<I", head)[0] if len(head) >= 4 else -1
    if magic in _PCAP_MAGICS:
        if size < 24:
            raise CaptureFileError(
                f"{name} is a pcap file cut short in its 24-byte header ({size} bytes): "
                "nothing to replay, capture again"
            )
        return "pcap"
    if magic == _NG_SHB:
        if size < 28:
            raise CaptureFileError(
                f"{name} is a pcapng file cut short in its section header ({size} bytes): "
                "nothing to replay, capture again"
            )
        bom = struct.unpack_from("<I", head, 8)[0]
        if bom not in (_NG_BOM, _NG_BOM_SWAPPED):
            raise CaptureFileError(
                f"{name} is not a readable pcapng file (section header byte-order magic {bom:#010x}, "
                f"not {_NG_BOM:#010x}): name a capture written by tcpdump -w or Wireshark"
            )
        (blen,) = struct.unpack_from("<I" if bom == _NG_BOM else ">I", head, 4)
        if blen < 28 or blen % 4 or blen > _MAX_RECORD:
            raise CaptureFileError(
                f"{name} is not a readable pcapng file (section header length {blen}): "
                "name a capture written by tcpdump -w or Wireshark"
            )
        if blen > size:
            raise CaptureFileError(
                f"{name} is a pcapng file cut short in its section header ({size} of {blen} bytes): "
                "nothing to replay, capture again"
            )
        return "pcapng"
    start = head[:4].hex(" ") or "nothing"
    raise CaptureFileError(
        f"{name} is not a pcap or pcapng file (it starts with {start}): "
        "name a capture written by tcpdump -w or Wireshark"
    )


Frames = Iterator[tuple[int, int, bytes, int]]  # (ts_ns, link type, frame, file offset after it)
Skip = Callable[[int, str], None]  # a packet of an unsupported link type: (link type, interface)


def _classic_frames(mm: mmap.mmap, size: int, skip: Skip) -> Frames:
    """(ts_ns, link type, frame, file offset) records of a classic pcap, read straight from the map.

    Raises `_Damaged` where a record is cut short or its length is impossible: what came before was
    yielded; the packets of an unsupported link type go to `skip` instead.
    """
    if size < 24:
        raise _Damaged(0, TRUNCATED, f"a 24-byte file header, {size} bytes of it in the file")
    (magic,) = struct.unpack_from("<I", mm, 0)
    endian, frac_ns = _PCAP_MAGICS[magic]
    linktype = struct.unpack_from(endian + "I", mm, 20)[0] & 0x0FFFFFFF  # upper bits are FCS flags
    supported = linktype in SUPPORTED_LINKTYPES
    off, unpack = 24, struct.Struct(endian + "IIII").unpack_from
    while off < size:
        if off + 16 > size:
            raise _Damaged(
                off, TRUNCATED, f"a 16-byte packet record header, {size - off} bytes of it in the file"
            )
        sec, frac, caplen, _ = unpack(mm, off)
        if caplen > _MAX_RECORD:
            raise _Damaged(off, CORRUPT, f"packet record length {caplen}, more than 16 MiB")
        start = off + 16
        if start + caplen > size:  # an interrupted capture, or a copy of one still being written
            raise _Damaged(off, TRUNCATED, f"a {caplen}-byte packet, {size - start} bytes of it in the file")
        off = start + caplen
        if supported:
            yield sec * 1_000_000_000 + frac * frac_ns, linktype, mm[start:off], off
        else:
            skip(linktype, "")


@dataclass(slots=True)
class _Iface:
    linktype: int
    snaplen: int
    name: str  # "interface N (if_name)", for warnings
    units: int = 1_000_000  # timestamp units per second (if_tsresol; microseconds by default)
    offset_ns: int = 0  # if_tsoffset, seconds added to every timestamp

    @property
    def supported(self) -> bool:
        return self.linktype in SUPPORTED_LINKTYPES


def _ng_iface(mm: mmap.mmap, off: int, end: int, e: str, index: int) -> _Iface:
    linktype, _, snaplen = struct.unpack_from(e + "HHI", mm, off + 8)
    iface = _Iface(linktype, snaplen, f"interface {index}")
    opt = off + 16
    while opt + 4 <= end:
        code, length = struct.unpack_from(e + "HH", mm, opt)
        if code == 0 or opt + 4 + length > end:  # end of options, or an option overrunning its block
            break
        if code == _NG_OPT_TSRESOL and length >= 1:
            res = mm[opt + 4]
            iface.units = 2 ** (res & 0x7F) if res & 0x80 else 10 ** min(res, 0x7F)
        elif code == _NG_OPT_TSOFFSET and length >= 8:
            iface.offset_ns = struct.unpack_from(e + "q", mm, opt + 4)[0] * 1_000_000_000
        elif code == _NG_OPT_NAME and length:
            raw = mm[opt + 4 : opt + 4 + min(length, _MAX_IFACE_NAME)].rstrip(b"\0")
            name = "".join(c if c.isprintable() else "?" for c in raw.decode("utf-8", "replace"))
            iface.name = f"interface {index} ({name})"
        opt += 4 + (length + 3) // 4 * 4
    return iface


def _ng_block_length(mm: mmap.mmap, off: int, size: int, e: str) -> int:
    """The length of the block at `off`, checked against the file and its trailing copy."""
    (blen,) = struct.unpack_from(e + "I", mm, off + 4)
    if blen < 12 or blen % 4 or blen > _MAX_RECORD:
        raise _Damaged(off, CORRUPT, f"block length {blen}, not a multiple of 4 from 12 to 16 MiB")
    if off + blen > size:
        raise _Damaged(off, TRUNCATED, f"a {blen}-byte block, {size - off} bytes of it in the file")
    (trailer,) = struct.unpack_from(e + "I", mm, off + blen - 4)
    if trailer != blen:
        raise _Damaged(off, CORRUPT, f"block length {blen} at its start, {trailer} at its end")
    length: int = blen
    return length


def _pcapng_frames(mm: mmap.mmap, size: int, skip: Skip) -> Frames:
    """(ts_ns, link type, frame, file offset) of every packet block, each with its own interface's
    link type and timestamp resolution (tshark/dumpcap/mergecap write several interfaces per file);
    timestamps are exact integers (a float of seconds loses the nanoseconds).

    Raises `_Damaged` at the first block cut short or inconsistent: what came before was yielded.
    The packets of an interface with an unsupported link type go to `skip` instead.
    """
    e, off, ts = "<", 0, 0
    ifaces: list[_Iface] = []
    while off < size:
        if off + 12 > size:
            raise _Damaged(off, TRUNCATED, f"a 12-byte block header, {size - off} bytes of it in the file")
        if mm[off : off + 4] == b"\x0a\x0d\x0d\x0a":  # a section starts: its own byte order and interfaces
            (bom,) = struct.unpack_from("<I", mm, off + 8)
            if bom not in (_NG_BOM, _NG_BOM_SWAPPED):
                raise _Damaged(off, CORRUPT, f"section header byte-order magic {bom:#010x}")
            e = "<" if bom == _NG_BOM else ">"
            ifaces = []
        (btype,) = struct.unpack_from(e + "I", mm, off)
        blen = _ng_block_length(mm, off, size, e)
        end = off + blen - 4
        if btype in (_NG_EPB, _NG_PB):
            if blen < 32:
                raise _Damaged(off, CORRUPT, f"a {blen}-byte packet block, less than its 32-byte header")
            if btype == _NG_EPB:
                idx, hi, lo, caplen = struct.unpack_from(e + "IIII", mm, off + 8)
            else:  # obsolete Packet Block: 16-bit interface id, then a drops count
                idx, _, hi, lo, caplen = struct.unpack_from(e + "HHIII", mm, off + 8)
            if idx >= len(ifaces):
                raise _Damaged(
                    off, CORRUPT, f"a packet of interface {idx}, which the section did not describe"
                )
            if off + 28 + caplen > end:
                raise _Damaged(off, CORRUPT, f"a {caplen}-byte packet in a {blen}-byte block")
            iface = ifaces[idx]
            if iface.supported:
                ts = iface.offset_ns + ((hi << 32) | lo) * 1_000_000_000 // iface.units
                ts = min(max(ts, 0), _MAX_TS_NS)
                yield ts, iface.linktype, mm[off + 28 : off + 28 + caplen], off + blen
            else:
                skip(iface.linktype, iface.name)
        elif btype == _NG_SPB:  # no timestamp: it arrived no earlier than the packet before
            if not ifaces:
                raise _Damaged(off, CORRUPT, "a simple packet block before any interface description")
            if blen < 16:
                raise _Damaged(off, CORRUPT, f"a {blen}-byte simple packet block, less than 16")
            (origlen,) = struct.unpack_from(e + "I", mm, off + 8)
            iface = ifaces[0]
            caplen = min(origlen, iface.snaplen or origlen, end - off - 12)
            if iface.supported:
                yield ts, iface.linktype, mm[off + 12 : off + 12 + caplen], off + blen
            else:
                skip(iface.linktype, iface.name)
        elif btype == _NG_IDB:
            if blen < 20:
                raise _Damaged(off, CORRUPT, f"a {blen}-byte interface description, less than 20")
            if len(ifaces) >= _MAX_IFACES:
                raise _Damaged(off, CORRUPT, f"more than {_MAX_IFACES} interfaces in one section")
            ifaces.append(_ng_iface(mm, off, end, e, len(ifaces)))
        elif btype == _NG_SHB and blen < 28:
            raise _Damaged(off, CORRUPT, f"a {blen}-byte section header, less than 28")
        off += blen


# ---------------------------------------------------------------------------------------------------
# Reassembly.


@dataclass(slots=True)
class _Half:
    """One direction of a connection: the sequence base and the bytes waiting behind a hole."""

    io: Io
    base: int | None = None  # sequence number of position 0
    next: int = 0  # next position expected in order
    pending: dict[int, tuple[bytes, int, int]] = field(default_factory=dict)  # pos -> (data, len, ts)
    pending_bytes: int = 0
    oldest_pending_ns: int = 0
    acked: int = 0  # highest position the peer acknowledged while a hole was open
    acked_ns: int = -1  # when that was first seen (-1: no acknowledged hole outstanding)
    acked_seen: int = 0  # packets of the connection since then
    fin_at: int = -1  # position of the FIN (-1: none seen)

    def complete(self) -> bool:
        """A FIN was seen and every byte before it has been delivered (or given up as a gap)."""
        return 0 <= self.fin_at <= self.next

    def position(self, seq: int) -> int:
        # Unwrap the 32-bit sequence number to the position nearest the one expected next.
        assert self.base is not None
        diff = (seq - self.base - self.next) & _U32
        return self.next + (diff - (1 << 32) if diff >= 1 << 31 else diff)


@dataclass(slots=True)
class _Conn:
    info: ConnInfo
    client: tuple[bytes, int]
    c2s: _Half
    s2c: _Half
    closed: bool = False


def _syn_ack_first(c2s: _Half) -> bool:
    """The client's direction has seen nothing yet: its connection was opened by the SYN-ACK."""
    return c2s.base is None and not c2s.next and not c2s.pending


def _ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


class PcapReader:
    """Iterate a capture's connections as `ConnEvent`/`Fragment`s in capture order.

    `max_pending_bytes` and `hole_timeout_ns` bound how long a direction waits for a missing segment
    before it gives up and leaves a gap. A hole the peer has acknowledged is given up after
    `ack_grace_packets` more packets of its connection or `ack_grace_ns`, whichever comes first:
    capture files often hold an ACK a little before the data it acknowledges. `close_at_eof` ends
    connections still open at the end of the file with a closing `ConnEvent`, as a replay that must
    flush everything wants.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
        max_pending_bytes: int = 4 << 20,
        hole_timeout_ns: int = 2_000_000_000,
        ack_grace_ns: int = 50_000_000,
        ack_grace_packets: int = 4,
        close_at_eof: bool = False,
        health: Health | None = None,
    ) -> None:
        self.path = Path(path)
        self.health = health
        self.damage: CaptureDamage | None = None  # where the file stopped being readable, if it did
        self.unsupported: dict[int, int] = {}  # link type -> packets skipped
        self.size = 0  # of the file, once opened
        self.progress = progress
        self.max_pending_bytes = max_pending_bytes
        self.hole_timeout_ns = hole_timeout_ns
        self.ack_grace_ns = ack_grace_ns
        self.ack_grace_packets = ack_grace_packets
        self._acked_holes: dict[int, tuple[_Half, _Conn]] = {}  # id(half) -> directions with acked holes
        self.close_at_eof = close_at_eof
        self.stats = PcapStats()
        self._conns: dict[tuple[bytes, int, bytes, int], _Conn] = {}
        self._generations: dict[tuple[bytes, int, bytes, int], int] = {}

    # -- file ------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Event]:
        kind = check_capture(self.path)
        with self.path.open("rb") as fh:
            try:
                mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError) as e:  # the file changed since it was checked
                raise CaptureFileError(f"cannot read {self.path} ({e}): name a pcap or pcapng file") from None
            with mm:
                size = self.size = len(mm)
                frames = (_pcapng_frames if kind == "pcapng" else _classic_frames)(mm, size, self._skip)
                yield from self._run(frames, size)

    def _skip(self, linktype: int, iface: str) -> None:
        """A packet of a link type this reader does not decode: counted, and warned once per link type."""
        self.stats.packets += 1
        self.stats.unsupported_packets += 1
        if linktype not in self.unsupported:
            self.unsupported[linktype] = 0
            name = _LINKTYPE_NAMES.get(linktype)
            log.warning(
                "%s: %s has link type %d%s, which replay does not read: its packets are skipped and counted "
                "(l7scope.capture.dropped, reason %r); capture on an Ethernet, loopback or `any` interface",
                self.path, iface or "the capture", linktype, f" ({name})" if name else "", UNSUPPORTED,
            )  # fmt: skip
            if self.health is not None:
                self.health.count("capture_file_errors", "pcap", reason=UNSUPPORTED)
        self.unsupported[linktype] += 1
        if self.health is not None:
            self.health.count("capture_lost_events", "pcap", reason=UNSUPPORTED)

    def _run(self, frames: Frames, size: int) -> Iterator[Event]:
        out: list[Event] = []
        stats, progress = self.stats, self.progress
        ts_ns = 0
        try:
            for ts_ns, linktype, buf, offset in frames:
                stats.packets += 1
                if progress is not None and stats.packets % _PROGRESS_EVERY == 0:
                    progress(offset, size)
                seg = parse_tcp(buf, linktype)
                if seg is None:
                    stats.skipped += 1
                    continue
                stats.tcp_packets += 1
                self._segment(seg, ts_ns, out)
                if self._acked_holes:
                    self._skip_acked_holes(ts_ns, out)
                if out:
                    yield from out
                    out.clear()
        except _Damaged as e:  # the connections read so far are still flushed below
            self.damage = e.damage
            if self.health is not None:
                self.health.count("capture_file_errors", "pcap", reason=e.damage.reason)
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            self._flush(conn.c2s, conn, ts_ns, out)
            self._flush(conn.s2c, conn, ts_ns, out)
            if self.close_at_eof:
                self._close(conn, ts_ns, out)
        yield from out
        if progress is not None:
            progress(size, size)

    # -- connections -----------------------------------------------------------------------------
    def _open(
        self, client: tuple[bytes, int], server: tuple[bytes, int], inferred: bool, ts: int, out: list[Event]
    ) -> _Conn:
        key = (client[0], client[1], server[0], server[1])
        gen = self._generations.get(key, -1) + 1
        self._generations[key] = gen
        cli = Endpoint(_ip_text(client[0]), client[1])
        srv = Endpoint(_ip_text(server[0]), server[1])
        info = ConnInfo(
            conn_id=f"pcap/{cli}-{srv}/{gen}", local=srv, remote=cli, role=Role.SERVER, role_inferred=inferred
        )
        conn = _Conn(info, client, _Half(Io.RECV), _Half(Io.SEND))
        self._conns[key] = conn
        self._conns[(server[0], server[1], client[0], client[1])] = conn
        self.stats.connections += 1
        out.append(ConnEvent(info=info, ts_ns=ts))
        return conn

    def _close(self, conn: _Conn, ts: int, out: list[Event]) -> None:
        self._flush(conn.c2s, conn, ts, out)
        self._flush(conn.s2c, conn, ts, out)
        conn.closed = True
        out.append(
            ConnEvent(
                info=conn.info, ts_ns=ts, closed=True, send_bytes=conn.s2c.next, recv_bytes=conn.c2s.next
            )
        )

    def _segment(self, seg: _Segment, ts: int, out: list[Event]) -> None:
        src, dst = (seg.src, seg.sport), (seg.dst, seg.dport)
        conn = self._conns.get((seg.src, seg.sport, seg.dst, seg.dport))
        flags = seg.flags
        if flags & _TCP_SYN:
            if flags & _TCP_ACK:  # SYN-ACK: the sender is the server
                if conn is None or conn.closed or conn.s2c.base not in (None, seg.seq + 1):
                    if conn is not None and not conn.closed:
                        self._close(conn, ts, out)
                    conn = self._open(dst, src, False, ts, out)
                if conn.client == dst and conn.s2c.base is None:
                    conn.s2c.base = seg.seq + 1
            elif conn is not None and not conn.closed and conn.client == src and _syn_ack_first(conn.c2s):
                conn.c2s.base = seg.seq + 1  # the same handshake, its SYN-ACK captured first
            elif conn is None or conn.closed or conn.client != src or conn.c2s.base != seg.seq + 1:
                if conn is not None and not conn.closed:
                    self._close(conn, ts, out)
                conn = self._open(src, dst, False, ts, out)
                conn.c2s.base = seg.seq + 1
        elif conn is None or conn.closed:
            if seg.length == 0 or conn is not None:  # nothing to show, or a straggler of a closed one
                return
            # Mid-connection: the well-known (lower) port is most likely the server's.
            if seg.sport < seg.dport:
                conn = self._open(dst, src, True, ts, out)
            else:
                conn = self._open(src, dst, True, ts, out)
        half, other = (conn.c2s, conn.s2c) if src == conn.client else (conn.s2c, conn.c2s)
        data_seq = seg.seq + 1 if flags & _TCP_SYN else seg.seq
        if half.base is None:
            half.base = data_seq
        if seg.length:
            self._accept(half, conn, half.position(data_seq), seg.payload, seg.length, ts, out)
        half.acked_seen += 1
        other.acked_seen += 1
        if flags & _TCP_ACK and (other.pending or other.fin_at >= 0) and other.base is not None:
            # The peer acknowledged bytes not seen yet: unless they show up late, they never will.
            acked = other.position(seg.ack)
            if acked > other.next:
                other.acked = max(other.acked, acked)
                if other.acked_ns < 0:
                    other.acked_ns, other.acked_seen = ts, 0
                    self._acked_holes[id(other)] = (other, conn)
        if half.pending and ts - half.oldest_pending_ns > self.hole_timeout_ns:
            self._flush(half, conn, ts, out)
        if flags & _TCP_RST:
            self._close(conn, ts, out)
            return
        if flags & _TCP_FIN and half.fin_at < 0:
            half.fin_at = half.position(data_seq) + seg.length
        # Both FINs close the connection only once the data before them is in: captures reorder.
        if half.complete() and other.complete():
            self._close(conn, ts, out)

    def _skip_acked_holes(self, ts: int, out: list[Event]) -> None:
        """Leave a gap for acknowledged holes still open `ack_grace_ns` after the acknowledgement."""
        for key, (half, conn) in list(self._acked_holes.items()):
            filled = conn.closed or half.next >= half.acked or not (half.pending or half.fin_at >= 0)
            expired = half.acked_seen >= self.ack_grace_packets or ts - half.acked_ns >= self.ack_grace_ns
            if not (filled or expired):
                continue
            half.acked_ns = -1
            del self._acked_holes[key]
            if filled:  # nothing left to give up
                continue
            while half.next < half.acked:
                # Up to the next buffered bytes, else up to the FIN (the ACK also counts the FIN).
                upto = min(half.acked, min(half.pending) if half.pending else half.fin_at)
                if upto <= half.next:
                    break
                self.stats.gap_bytes += upto - half.next
                half.next = upto
                self._drain(half, conn, ts, out)
            if conn.c2s.complete() and conn.s2c.complete():
                self._close(conn, ts, out)

    # -- one direction ---------------------------------------------------------------------------
    def _emit(
        self, half: _Half, conn: _Conn, pos: int, data: bytes, length: int, ts: int, out: list[Event]
    ) -> None:
        out.append(Fragment(conn.info.conn_id, half.io, pos, length, data, ts, 0, Source.PCAP))
        half.next = pos + length

    def _accept(
        self, half: _Half, conn: _Conn, pos: int, data: bytes, length: int, ts: int, out: list[Event]
    ) -> None:
        nxt = half.next
        end = pos + length
        if end <= nxt:
            self.stats.retransmitted_bytes += length
            return
        if pos < nxt:  # partial overlap with bytes already delivered
            self.stats.retransmitted_bytes += nxt - pos
            data, length, pos = data[nxt - pos :], end - nxt, nxt
        if pos == nxt:
            self._emit(half, conn, pos, data, length, ts, out)
            if half.pending:
                self._drain(half, conn, ts, out)
            return
        held = half.pending.get(pos)
        if held is not None and held[1] >= length:
            self.stats.retransmitted_bytes += length
            return
        if not half.pending:
            half.oldest_pending_ns = ts
        half.pending[pos] = (data, length, ts)
        half.pending_bytes += length - (held[1] if held else 0)
        self.stats.reordered_segments += 1
        if half.pending_bytes > self.max_pending_bytes:
            self._flush(half, conn, ts, out)

    def _drain(self, half: _Half, conn: _Conn, ts: int, out: list[Event]) -> None:
        """Deliver buffered segments now contiguous with `next`; they became readable at `ts`."""
        pending = half.pending
        while pending:
            pos = min(pending)
            if pos > half.next:
                break
            data, length, _ = pending.pop(pos)
            half.pending_bytes -= length
            nxt = half.next
            if pos + length <= nxt:
                self.stats.retransmitted_bytes += length
                continue
            if pos < nxt:
                self.stats.retransmitted_bytes += nxt - pos
                data, length, pos = data[nxt - pos :], pos + length - nxt, nxt
            self._emit(half, conn, pos, data, length, ts, out)
        if pending:
            half.oldest_pending_ns = min(t for _, _, t in pending.values())

    def _flush(self, half: _Half, conn: _Conn, ts: int, out: list[Event]) -> None:
        """Give up on every hole in this direction: deliver what is buffered, leaving gaps."""
        while half.pending:
            first = min(half.pending)
            if first > half.next:
                self.stats.gap_bytes += first - half.next
                half.next = first
            self._drain(half, conn, ts, out)


def read_pcap(
    path: str | os.PathLike[str],
    progress: Progress | None = None,
    *,
    close_at_eof: bool = False,
    health: Health | None = None,
) -> Iterator[Event]:
    """`ConnEvent`s and `Fragment`s of every TCP connection in a pcap/pcapng file, in capture order.

    `progress(bytes_read, file_size)` is called every few thousand packets and once at the end.
    Use `PcapReader` itself to learn whether the file was damaged (`damage`) once it is read.
    """
    return iter(PcapReader(path, progress=progress, close_at_eof=close_at_eof, health=health))
