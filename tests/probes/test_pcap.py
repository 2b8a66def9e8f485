"""The pcap replay source: synthetic captures with exact expectations, live tcpdump captures, the corpus."""

from __future__ import annotations

import collections
import http.client
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest

from probes.fragment import ConnEvent, Fragment, Io, Source
from probes.pcap import (
    LT_ETHERNET,
    LT_LINUX_SLL,
    LT_LINUX_SLL2,
    LT_NULL,
    LT_RAW,
    PcapReader,
    parse_tcp,
    read_pcap,
)
from protocols.base import Role
from tests.support.corpus import CORPUS

SYN, ACK, FIN, RST, PSH = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_FIN, dpkt.tcp.TH_RST, dpkt.tcp.TH_PUSH
CLI, SRV = ("127.0.0.1", 40000), ("127.0.0.2", 8080)


# -- building captures -----------------------------------------------------------------------------


def ip_packet(
    src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int, flags: int, data: bytes
) -> bytes:
    tcp = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack, flags=flags, data=data)
    if ":" in src[0]:
        a, b = socket.inet_pton(socket.AF_INET6, src[0]), socket.inet_pton(socket.AF_INET6, dst[0])
        ip6 = dpkt.ip6.IP6(src=a, dst=b, nxt=6, hlim=64, data=tcp, plen=len(tcp))
        return bytes(ip6)
    return bytes(dpkt.ip.IP(src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=6, data=tcp))


def frame(linktype: int, ip: bytes) -> bytes:
    v6 = ip[0] >> 4 == 6
    etype = 0x86DD if v6 else 0x0800
    if linktype == LT_ETHERNET:
        return b"\x02" * 6 + b"\x04" * 6 + struct.pack("!H", etype) + ip
    if linktype == LT_LINUX_SLL:
        return struct.pack("!HHH8sH", 0, 772, 6, b"\0" * 8, etype) + ip
    if linktype == LT_LINUX_SLL2:
        return struct.pack("!HHIHBB8s", etype, 0, 1, 772, 0, 6, b"\0" * 8) + ip
    if linktype == LT_NULL:
        return struct.pack("=I", 10 if v6 else 2) + ip
    return ip


Pkt = tuple[tuple[str, int], tuple[str, int], int, int, int, bytes]


def write_pcap(path: Path, packets: list[Pkt], linktype: int = LT_ETHERNET, t0: float = 1000.0) -> Path:
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, linktype=linktype, nano=True)
        for i, (src, dst, seq, ack, flags, data) in enumerate(packets):
            writer.writepkt(frame(linktype, ip_packet(src, dst, seq, ack, flags, data)), ts=t0 + i * 0.001)
    return path


def events(path: Path, **kw: object) -> list[Fragment | ConnEvent]:
    return list(PcapReader(path, **kw))  # type: ignore[arg-type]


def frags(evs: list[Fragment | ConnEvent], io: Io) -> list[tuple[int, bytes]]:
    return [(e.position, e.data) for e in evs if isinstance(e, Fragment) and e.io == io]


def handshake(c_isn: int = 1000, s_isn: int = 5000, cli=CLI, srv=SRV) -> list[Pkt]:
    return [
        (cli, srv, c_isn, 0, SYN, b""),
        (srv, cli, s_isn, c_isn + 1, SYN | ACK, b""),
        (cli, srv, c_isn + 1, s_isn + 1, ACK, b""),
    ]


# -- synthetic: reordering, retransmission, holes ---------------------------------------------------


def test_reorder_retransmit_overlap_and_hole(tmp_path: Path) -> None:
    c, s = 1001, 5001  # first data sequence numbers
    pkts = [
        *handshake(),
        (CLI, SRV, c, s, ACK | PSH, b"A" * 10),  # pos 0
        (CLI, SRV, c + 20, s, ACK | PSH, b"C" * 10),  # pos 20, before 10 arrives
        (CLI, SRV, c + 10, s, ACK | PSH, b"B" * 10),  # pos 10 fills the hole
        (CLI, SRV, c, s, ACK | PSH, b"A" * 10),  # pure retransmission
        (CLI, SRV, c + 25, s, ACK | PSH, b"C" * 5 + b"D" * 5),  # half old, half new
        (CLI, SRV, c + 45, s, ACK | PSH, b"F" * 10),  # pos 45: 35..45 never captured
        (SRV, CLI, s, c + 55, ACK, b""),  # the server got 35..45, so no retransmission will come
        (SRV, CLI, s, c + 55, ACK | PSH, b"response"),
        (CLI, SRV, c + 55, s + 8, FIN | ACK, b""),
        (SRV, CLI, s + 8, c + 56, FIN | ACK, b""),
        (CLI, SRV, c + 56, s + 9, ACK, b""),  # after close: ignored
    ]
    path = write_pcap(tmp_path / "synthetic.pcap", pkts)
    reader = PcapReader(path)
    evs = list(reader)

    opened = evs[0]
    assert isinstance(opened, ConnEvent) and not opened.closed
    info = opened.info
    assert info.conn_id == "pcap/127.0.0.1:40000-127.0.0.2:8080/0"
    assert info.role == Role.SERVER and not info.role_inferred
    assert (info.local.ip, info.local.port, info.remote.port) == ("127.0.0.2", 8080, 40000)
    assert info.server == info.local and info.client == info.remote

    assert frags(evs, Io.RECV) == [
        (0, b"A" * 10),
        (10, b"B" * 10),
        (20, b"C" * 10),
        (30, b"D" * 5),
        (45, b"F" * 10),
    ]
    assert frags(evs, Io.SEND) == [(0, b"response")]
    closed = evs[-1]
    assert isinstance(closed, ConnEvent) and closed.closed
    assert (closed.send_bytes, closed.recv_bytes) == (8, 55)
    assert sum(isinstance(e, ConnEvent) for e in evs) == 2

    fragments = [e for e in evs if isinstance(e, Fragment)]
    assert all(f.source == Source.PCAP and f.length == len(f.data) for f in fragments)
    # C was buffered at 1.004 s and became readable when B arrived at 1.005 s.
    ts = {f.data[:1]: f.ts_ns for f in fragments}
    assert ts[b"A"] == 1_000_003_000_000 and ts[b"C"] == ts[b"B"] == 1_000_005_000_000
    assert [e.ts_ns for e in evs] == sorted(e.ts_ns for e in evs)
    assert reader.stats.gap_bytes == 10
    assert reader.stats.retransmitted_bytes == 15
    assert reader.stats.connections == 1


def test_capture_order_ack_before_data_syn_ack_before_syn_fin_before_data(tmp_path: Path) -> None:
    # Seen in `tcpdump -i any` and merged captures: packets a few places out of order. None of it is loss.
    c, s = 1001, 5001
    syn, syn_ack, ack = handshake()
    pkts = [
        syn_ack,  # before its SYN: still one connection
        syn,
        ack,
        (CLI, SRV, c, s, ACK | PSH, b"GET"),
        (SRV, CLI, s + 5, c + 3, ACK | PSH, b"world"),  # pos 5 before 0: a hole
        (CLI, SRV, c + 3, s + 10, ACK, b""),  # acknowledges the hole before it shows up
        (SRV, CLI, s, c + 3, ACK | PSH, b"hello"),
        (SRV, CLI, s + 10, c + 3, ACK | PSH, b"!"),  # pos 10 after the FINs below
    ]
    pkts.insert(7, (CLI, SRV, c + 3, s + 12, FIN | ACK, b""))
    pkts.insert(8, (SRV, CLI, s + 11, c + 4, FIN | ACK, b""))
    reader = PcapReader(write_pcap(tmp_path / "order.pcap", pkts))
    evs = list(reader)
    assert frags(evs, Io.RECV) == [(0, b"GET")]
    assert frags(evs, Io.SEND) == [(0, b"hello"), (5, b"world"), (10, b"!")]
    assert [(type(e), getattr(e, "closed", None)) for e in (evs[0], evs[-1])] == [
        (ConnEvent, False),
        (ConnEvent, True),
    ]
    assert reader.stats.connections == 1 and reader.stats.gap_bytes == 0


def test_acknowledged_hole_is_a_gap_a_few_packets_later(tmp_path: Path) -> None:
    c, s = 1001, 5001
    pkts = [
        *handshake(),
        (CLI, SRV, c, s, ACK | PSH, b"GET"),
        (SRV, CLI, s + 5, c + 3, ACK | PSH, b"world"),  # 0..5 never captured
        (CLI, SRV, c + 3, s + 10, ACK, b""),
        *[(CLI, SRV, c + 3, s + 10, ACK, b"") for _ in range(4)],  # window updates
        (CLI, SRV, c + 3, s + 10, ACK | PSH, b"GET"),
    ]
    reader = PcapReader(write_pcap(tmp_path / "lost.pcap", pkts))
    evs = list(reader)
    world = next(e for e in evs if isinstance(e, Fragment) and e.data == b"world")
    assert world.position == 5 and world.ts_ns == 1_000_009_000_000  # after 4 more packets, not at EOF
    assert reader.stats.gap_bytes == 5


def test_hole_without_ack_is_flushed_at_reset(tmp_path: Path) -> None:
    pkts = [
        *handshake(),
        (CLI, SRV, 1001, 5001, ACK, b"one"),
        (CLI, SRV, 1010, 5001, ACK, b"three"),  # 1004..1010 missing, never acked
        (CLI, SRV, 1015, 5001, RST, b""),
    ]
    evs = events(write_pcap(tmp_path / "rst.pcap", pkts))
    assert frags(evs, Io.RECV) == [(0, b"one"), (9, b"three")]
    closed = evs[-1]
    assert isinstance(closed, ConnEvent) and closed.closed and closed.recv_bytes == 14


def test_hole_gives_up_after_buffer_bound(tmp_path: Path) -> None:
    pkts = [*handshake(), (CLI, SRV, 1001, 5001, ACK, b"a")]
    pkts += [(CLI, SRV, 1101 + 100 * i, 5001, ACK, b"x" * 100) for i in range(5)]  # 1002..1101 lost
    evs = events(write_pcap(tmp_path / "bound.pcap", pkts), max_pending_bytes=250)
    got = frags(evs, Io.RECV)
    assert got[0] == (0, b"a")
    assert [p for p, _ in got[1:]] == [100, 200, 300, 400, 500]
    # Flushed when the buffer passed 250 bytes, i.e. while the third segment arrived.
    first_late = next(e for e in evs if isinstance(e, Fragment) and e.position == 100)
    assert first_late.ts_ns == 1_000_006_000_000


def test_sequence_wraparound(tmp_path: Path) -> None:
    isn = (1 << 32) - 5
    pkts = [
        *handshake(c_isn=isn),
        (CLI, SRV, isn + 1, 5001, ACK, b"0123456789"),
        (CLI, SRV, (isn + 11) & 0xFFFFFFFF, 5001, ACK, b"abcdef"),
    ]
    evs = events(write_pcap(tmp_path / "wrap.pcap", pkts))
    assert frags(evs, Io.RECV) == [(0, b"0123456789"), (10, b"abcdef")]


def test_mid_connection_guesses_lower_port_as_server(tmp_path: Path) -> None:
    db, app = ("127.0.0.3", 3306), ("127.0.0.4", 51000)
    pkts = [
        (db, app, 70000, 9000, ACK | PSH, b"greeting"),  # server speaks first
        (app, db, 9000, 70008, ACK | PSH, b"login"),
        (app, db, 9005, 70008, ACK, b""),
    ]
    evs = events(write_pcap(tmp_path / "mid.pcap", pkts))
    info = evs[0].info  # type: ignore[union-attr]
    assert info.role_inferred and info.role == Role.SERVER
    assert info.local.port == 3306 and info.remote.port == 51000
    assert info.conn_id == "pcap/127.0.0.4:51000-127.0.0.3:3306/0"
    assert frags(evs, Io.SEND) == [(0, b"greeting")]
    assert frags(evs, Io.RECV) == [(0, b"login")]
    assert not any(isinstance(e, ConnEvent) and e.closed for e in evs)
    closed = events(tmp_path / "mid.pcap", close_at_eof=True)[-1]
    assert isinstance(closed, ConnEvent) and closed.closed and closed.send_bytes == 8


def test_syn_ack_alone_names_the_server_and_reuse_makes_a_new_generation(tmp_path: Path) -> None:
    pkts = [
        (SRV, CLI, 5000, 1001, SYN | ACK, b""),  # the SYN was not captured
        (CLI, SRV, 1001, 5001, ACK, b"req"),
        (CLI, SRV, 1004, 5001, FIN | ACK, b""),
        (SRV, CLI, 5001, 1005, FIN | ACK, b""),
        *handshake(c_isn=777, s_isn=888),  # same 4-tuple again
        (CLI, SRV, 778, 889, ACK, b"again"),
    ]
    evs = events(write_pcap(tmp_path / "reuse.pcap", pkts))
    opens = [e.info for e in evs if isinstance(e, ConnEvent) and not e.closed]
    assert [i.conn_id[-2:] for i in opens] == ["/0", "/1"]
    assert all(not i.role_inferred and i.local.port == 8080 for i in opens)
    assert [(f.conn_id[-1], f.data) for f in evs if isinstance(f, Fragment)] == [
        ("0", b"req"),
        ("1", b"again"),
    ]


# -- link layers, IPv6, snap length, pcapng, progress -------------------------------------------------


@pytest.mark.parametrize("linktype", [LT_ETHERNET, LT_LINUX_SLL, LT_LINUX_SLL2, LT_NULL, LT_RAW])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_link_types_and_ip_versions(tmp_path: Path, linktype: int, family: str) -> None:
    cli, srv = (("::1", 40000), ("::1", 8443)) if family == "ipv6" else (CLI, SRV)
    pkts = [
        *handshake(cli=cli, srv=srv),
        (cli, srv, 1001, 5001, ACK, b"ping"),
        (srv, cli, 5001, 1005, ACK, b"pong"),
    ]
    evs = events(write_pcap(tmp_path / "l.pcap", pkts, linktype=linktype))
    assert frags(evs, Io.RECV) == [(0, b"ping")] and frags(evs, Io.SEND) == [(0, b"pong")]
    if family == "ipv6":
        assert evs[0].info.conn_id == "pcap/[::1]:40000-[::1]:8443/0"  # type: ignore[union-attr]


def test_snapped_payload_keeps_true_length_and_ignores_ethernet_padding(tmp_path: Path) -> None:
    path = tmp_path / "snap.pcap"
    with path.open("wb") as fh:
        writer = dpkt.pcap.Writer(fh, snaplen=70)
        for i, (src, dst, seq, ack, flags, data) in enumerate(
            [*handshake(), (CLI, SRV, 1001, 5001, ACK, b"x" * 100)]
        ):
            buf = frame(LT_ETHERNET, ip_packet(src, dst, seq, ack, flags, data))
            writer.writepkt(buf.ljust(60, b"\0")[:70], ts=1.0 + i)  # pad to the Ethernet minimum, cut at 70
        writer.writepkt(
            frame(LT_ETHERNET, ip_packet(CLI, SRV, 1101, 5001, ACK, b"ok")).ljust(60, b"\0"), ts=9.0
        )
    fr = [e for e in events(path) if isinstance(e, Fragment)]
    assert [(f.position, f.length, len(f.data)) for f in fr] == [(0, 100, 70 - 54), (100, 2, 2)]
    assert fr[1].data == b"ok"


def test_pcapng_and_progress(tmp_path: Path) -> None:
    pkts = [*handshake(), *[(CLI, SRV, 1001 + 3 * i, 5001, ACK, b"abc") for i in range(5000)]]
    classic = write_pcap(tmp_path / "p.pcap", pkts)
    ng = tmp_path / "p.pcapng"
    with ng.open("wb") as fh:
        writer = dpkt.pcapng.Writer(fh, linktype=LT_ETHERNET)
        for ts, buf in dpkt.pcap.Reader(classic.open("rb")):
            writer.writepkt(buf, ts=float(ts))
    seen: list[tuple[int, int]] = []
    got = list(read_pcap(ng, progress=lambda done, total: seen.append((done, total))))
    want = list(read_pcap(classic))
    assert [(type(e), getattr(e, "position", None)) for e in got] == [
        (type(e), getattr(e, "position", None)) for e in want
    ]
    assert b"".join(e.data for e in got if isinstance(e, Fragment)) == b"abc" * 5000
    size = ng.stat().st_size
    assert seen[-1] == (size, size) and len(seen) >= 2
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


CAPTURES = Path(__file__).parent / "captures"


def test_pcapng_with_two_interfaces_keeps_each_link_type_and_exact_nanoseconds() -> None:
    # mergecap of `tcpdump -i lo --time-stamp-precision=nano` (Ethernet, ns) and
    # `tcpdump -i any -y LINUX_SLL2` (us) around `curl /ok` on 127.0.0.1 and `curl -d item=1` on ::1.
    got = list(read_pcap(CAPTURES / "two-ifaces.pcapng"))
    frags = [e for e in got if isinstance(e, Fragment)]
    opened = [e.info for e in got if isinstance(e, ConnEvent) and not e.closed]
    assert [(i.local.ip, i.local.port, i.remote.port) for i in opened] == [
        ("127.0.0.1", 18080, 44810),
        ("::1", 18081, 54318),
    ]
    assert [(f.io, f.position, f.length, f.data[:16], f.ts_ns) for f in frags] == [
        (Io.RECV, 0, 81, b"GET /ok HTTP/1.1", 1795473135593846245),  # tshark: .593846245
        (Io.SEND, 0, 153, b"HTTP/1.1 200 OK\r", 1795473135593956004),
        (Io.RECV, 0, 156, b"POST /submit HTT", 1795473135600163000),
        (Io.SEND, 0, 160, b"HTTP/1.1 201 Cre", 1795473135600282000),
    ]


def _ng_block(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(e + "II", btype, len(body) + 12) + body + struct.pack(e + "I", len(body) + 12)


def _ng_section(e: str, resol: int, offset_s: int, packets: list[tuple[int, bytes]]) -> bytes:
    """A pcapng section in byte order `e`: one Ethernet interface (if_tsresol, if_tsoffset), EPBs."""
    shb = _ng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    opts = struct.pack(e + "HHB3x", 9, 1, resol) + struct.pack(e + "HHq", 14, 8, offset_s) + b"\0" * 4
    idb = _ng_block(e, 1, struct.pack(e + "HHI", LT_ETHERNET, 0, 0) + opts)
    epbs = b"".join(
        _ng_block(e, 6, struct.pack(e + "IIIII", 0, ts >> 32, ts & 0xFFFFFFFF, len(b), len(b)) + b)
        for ts, b in packets
    )
    return shb + idb + epbs


def test_pcapng_sections_big_endian_resolution_and_offset(tmp_path: Path) -> None:
    # Concatenated captures (`cat a.pcapng b.pcapng`) are two sections; each has its own byte order.
    hs = [frame(LT_ETHERNET, ip_packet(*p)) for p in handshake()]
    req = frame(LT_ETHERNET, ip_packet(CLI, SRV, 1001, 5001, ACK | PSH, b"ping"))
    path = tmp_path / "two-sections.pcapng"
    path.write_bytes(
        _ng_section("<", 3, 1000, [(5, b) for b in hs])  # milliseconds, +1000 s
        + _ng_section(">", 0x80 | 10, 0, [(7 * 1024 + 512, req)])  # 1/1024 s units, big-endian
    )
    frags = [e for e in read_pcap(path) if isinstance(e, Fragment)]
    assert [(f.data, f.ts_ns) for f in frags] == [(b"ping", 7_500_000_000)]
    syn = next(e for e in read_pcap(path) if isinstance(e, ConnEvent))
    assert syn.ts_ns == 1000_005_000_000


def test_rejects_non_capture_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"GET / HTTP/1.1\r\n")
    with pytest.raises(ValueError, match="not a pcap"):
        list(read_pcap(bad))


def test_parse_tcp_skips_non_tcp_and_fragments() -> None:
    udp = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\1", p=17, data=dpkt.udp.UDP(sport=1, dport=2))
    assert parse_tcp(bytes(udp), LT_RAW) is None
    frag = dpkt.ip.IP(src=b"\x7f\0\0\1", dst=b"\x7f\0\0\1", p=6, data=b"\0" * 20)
    frag.mf = 1
    assert parse_tcp(bytes(frag), LT_RAW) is None
    assert parse_tcp(b"\x00" * 10, LT_ETHERNET) is None


def test_parses_at_least_100k_packets_per_second(tmp_path: Path) -> None:
    template = bytearray(frame(LT_ETHERNET, ip_packet(CLI, SRV, 0, 1, ACK, b"y" * 200)))
    n, conns = 100_000, 64
    path = tmp_path / "big.pcap"
    seqs = [0] * conns
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        rec = struct.Struct("<IIII")
        for i in range(n):
            c = i % conns
            struct.pack_into("!H", template, 34, 40000 + c)  # TCP source port
            struct.pack_into("!I", template, 38, seqs[c])
            seqs[c] += 200
            fh.write(rec.pack(1000 + i // 100_000, i % 100_000 * 10, len(template), len(template)))
            fh.write(template)
    reader = PcapReader(path)
    t0 = time.perf_counter()
    count = sum(1 for e in reader if isinstance(e, Fragment))
    elapsed = time.perf_counter() - t0
    assert count == n and reader.stats.connections == conns
    rate = n / elapsed
    print(f"pcap replay: {rate:,.0f} packets/s")
    assert rate > 100_000


# -- the deepflow corpus, against tshark -------------------------------------------------------------


def _corpus() -> list[Path]:
    return sorted(CORPUS.glob("*/*.pcap")) if CORPUS.exists() else []


def tshark_payload_bytes(path: Path) -> collections.Counter[tuple[str, int]]:
    """Payload bytes per sending endpoint, retransmissions excluded, as Wireshark's analysis counts them."""
    out = subprocess.run(
        ["tshark", "-r", str(path), "-Y", "tcp.len > 0 && !tcp.analysis.retransmission "
         "&& !tcp.analysis.spurious_retransmission", "-T", "fields",
         "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "tcp.len"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    totals: collections.Counter[tuple[str, int]] = collections.Counter()
    for line in out.splitlines():
        v4, v6, port, length = line.split("\t")
        totals[(v4 or v6, int(port))] += int(length)
    return totals


def our_payload_bytes(evs: list[Fragment | ConnEvent]) -> collections.Counter[tuple[str, int]]:
    infos = {e.info.conn_id: e.info for e in evs if isinstance(e, ConnEvent)}
    totals: collections.Counter[tuple[str, int]] = collections.Counter()
    for e in evs:
        if isinstance(e, Fragment):
            info = infos[e.conn_id]
            sender = info.remote if e.io == Io.RECV else info.local
            totals[(sender.ip, sender.port)] += e.length
    return totals


@pytest.mark.root
@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
@pytest.mark.parametrize("path", _corpus(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_byte_totals_match_tshark(path: Path) -> None:
    evs = list(read_pcap(path))
    assert our_payload_bytes(evs) == tshark_payload_bytes(path)
    for e in evs:  # every fragment belongs to a connection announced before it
        assert isinstance(e, ConnEvent) or e.conn_id.startswith("pcap/")


def test_corpus_is_present() -> None:
    corpus = _corpus()
    assert any(p.parent.name == "http" for p in corpus) and any(p.parent.name == "mysql" for p in corpus)


# -- live captures of real traffic on loopback ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_tcpdump(args: list[str], out: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["tcpdump", "--immediate-mode", "-B", "16384", "-U", "-n", "-w", str(out), *args],
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    buf = b""
    while b"listening on" not in buf:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError(f"tcpdump did not start: {buf.decode(errors='replace')}")
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            buf += os.read(proc.stderr.fileno(), 4096)
    return proc


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture
def live_capture(tmp_path: Path) -> Iterator[tuple[Path, Path, int, bytes]]:
    """tcpdump on lo and on any around curl fetching from python's http.server; yields the captures."""
    if os.geteuid() != 0 or shutil.which("tcpdump") is None or shutil.which("curl") is None:
        pytest.skip("needs root, tcpdump and curl")
    blob = os.urandom(300_000)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "blob.bin").write_bytes(blob)
    port = _free_port()
    www = str(tmp_path / "www")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dumps: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        lo, anyif = tmp_path / "lo.pcap", tmp_path / "any.pcap"
        dumps.append(_start_tcpdump(["-i", "lo", f"tcp port {port}"], lo))
        dumps.append(_start_tcpdump(["-i", "any", f"tcp port {port}"], anyif))
        url = f"http://127.0.0.1:{port}"
        for path in ("/blob.bin", "/blob.bin", "/missing"):
            subprocess.run(["curl", "-s", "-o", os.devnull, url + path], check=False, timeout=20)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # one more, via Python
        conn.request("GET", "/blob.bin")
        assert conn.getresponse().read() == blob
        conn.close()
        time.sleep(0.5)  # let the last FIN/ACKs reach the capture
        for d in dumps:
            _stop(d)
        yield lo, anyif, port, blob
    finally:
        for d in dumps:
            _stop(d)
        _stop(server, signal.SIGTERM)


@pytest.mark.root
def test_live_loopback_capture(live_capture: tuple[Path, Path, int, bytes]) -> None:
    lo, anyif, port, blob = live_capture
    for path in (lo, anyif):
        evs = list(read_pcap(path))
        opens = [e.info for e in evs if isinstance(e, ConnEvent) and not e.closed]
        closes = {e.info.conn_id: e for e in evs if isinstance(e, ConnEvent) and e.closed}
        assert len(opens) == 4, path.name
        streams: dict[tuple[str, Io], list[Fragment]] = collections.defaultdict(list)
        for e in evs:
            if isinstance(e, Fragment):
                streams[(e.conn_id, e.io)].append(e)
        bodies = []
        for info in opens:
            assert info.local.port == port and info.role == Role.SERVER and not info.role_inferred
            assert info.local.ip == info.remote.ip == "127.0.0.1"
            for io in (Io.RECV, Io.SEND):  # contiguous: no gaps on loopback
                pos = 0
                for f in streams[(info.conn_id, io)]:
                    assert f.position == pos and f.length == len(f.data)
                    pos += f.length
            request = b"".join(f.data for f in streams[(info.conn_id, Io.RECV)])
            response = b"".join(f.data for f in streams[(info.conn_id, Io.SEND)])
            assert request.startswith(b"GET /")
            assert response.startswith(b"HTTP/1.0 ")
            assert closes[info.conn_id].send_bytes == len(response)
            assert closes[info.conn_id].recv_bytes == len(request)
            bodies.append(response.split(b"\r\n\r\n", 1)[1])
        assert bodies.count(blob) == 3
        if shutil.which("tshark"):
            assert our_payload_bytes(evs) == tshark_payload_bytes(path)


@pytest.mark.root
def test_live_capture_as_pcapng(live_capture: tuple[Path, Path, int, bytes], tmp_path: Path) -> None:
    lo = live_capture[0]
    if shutil.which("editcap") is None:
        pytest.skip("editcap is not installed")
    ng = tmp_path / "lo.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", str(lo), str(ng)], check=True, timeout=30)
    a, b = list(read_pcap(lo)), list(read_pcap(ng))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert type(x) is type(y)
        assert abs(x.ts_ns - y.ts_ns) < 1000  # pcapng timestamps pass through a float
        if isinstance(x, Fragment):
            assert (x.conn_id, x.io, x.position, x.data) == (y.conn_id, y.io, y.position, y.data)  # type: ignore[union-attr]


def test_snaplen_cut_responses_keep_the_other_exchanges_paired(tmp_path: Path) -> None:
    # `tcpdump -i lo -s 300` of one keep-alive connection to nginx: 15 requests, several responses
    # cut a few bytes short (some inside their headers). A cut response is lost; the others must not
    # be paired with the wrong request (every later exchange was lost or shifted before).
    import dataclasses
    import json

    from l7scope.config import Config
    from pipeline.run import run_replay
    from probes.health import Health

    out, config = tmp_path / "records.jsonl", Config(node="t")
    config = dataclasses.replace(config, export=dataclasses.replace(config.export, jsonl=str(out)))
    health = run_replay(read_pcap(CAPTURES / "snaplen300-nginx.pcap"), config, {}, Health())
    records = [json.loads(line) for line in out.read_text().splitlines()]
    got = [(r["attributes"]["url.path"], r["attributes"]["http.response.status_code"]) for r in records]
    status = {"/ok": 200, "/submit": 201, "/small.txt": 200, "/big.bin": 200}
    assert len(got) >= 12, got
    assert all(code == status.get(path, 404) for path, code in got), got
    assert health.total("parse_errors") == 0 and health.total("gaps") >= 1
