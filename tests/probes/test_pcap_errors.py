"""Damaged, truncated and odd capture files: read up to the damage, which is reported and counted.

Every input is made from a real capture (tests/probes/captures) by changing a few bytes, so the part
before the damage is real traffic; what the reader returns for it must equal what it returns for the
same file cut cleanly just before the damage.
"""

from __future__ import annotations

import logging
import os
import random
import struct
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest

from probes.fragment import ConnEvent, Fragment
from probes.health import Health
from probes.pcap import CORRUPT, TRUNCATED, UNSUPPORTED, CaptureFileError, PcapReader, check_capture

CAPTURES = Path(__file__).parent / "captures"
PCAP = (CAPTURES / "snaplen300-nginx.pcap").read_bytes()  # 59 records, one keep-alive connection
PCAPNG = (CAPTURES / "two-ifaces.pcapng").read_bytes()  # 2 interfaces, 2 connections, 2 exchanges


def pcap_records(data: bytes) -> list[int]:
    """Offsets of a little-endian classic pcap's packet records."""
    offsets, off = [], 24
    while off < len(data):
        offsets.append(off)
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
    return offsets


def pcapng_blocks(data: bytes) -> list[tuple[int, int]]:
    """(offset, block type) of a little-endian pcapng's blocks."""
    blocks, off = [], 0
    while off < len(data):
        btype, blen = struct.unpack_from("<II", data, off)
        blocks.append((off, btype))
        off += blen
    return blocks


def put_u32(data: bytes, offset: int, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into("<I", out, offset, value)
    return bytes(out)


# The first packet of the second interface (::1, the POST): the GET on interface 0 is all before it.
NG_DAMAGE = next(off for off, btype in pcapng_blocks(PCAPNG) if btype == 6 and PCAPNG[off + 8] == 1)
# Record 24, the fifth `GET /ok`: eight exchanges of the connection come before it.
PCAP_DAMAGE = pcap_records(PCAP)[24]


@dataclass(frozen=True)
class Damaged:
    """A capture damaged at `offset`; `prefix` is the same capture cut cleanly there."""

    name: str
    suffix: str
    data: bytes
    offset: int
    reason: str
    prefix: bytes


def damaged_captures() -> list[Damaged]:
    """The damaged files of the issue, each built from a real capture."""
    ng, pc = NG_DAMAGE, PCAP_DAMAGE
    bad_bom = put_u32(PCAPNG[:28], 8, 0x1A2B3C4E) + PCAPNG[28:]  # one bit off the byte-order magic
    cases = [
        Damaged(
            f"pcapng-block-length-{n:#x}", ".pcapng", put_u32(PCAPNG, ng + 4, n), ng, CORRUPT, PCAPNG[:ng]
        )
        for n in (0, 5, 0x7FFFFF00)
    ]
    return [
        *cases,
        Damaged("pcapng-truncated", ".pcapng", PCAPNG[: ng + 60], ng, TRUNCATED, PCAPNG[:ng]),
        Damaged("pcapng-second-section-bad-byte-order", ".pcapng", PCAPNG + bad_bom, len(PCAPNG), CORRUPT,
                PCAPNG),
        Damaged("pcap-incl-len-0xfffffff0", ".pcap", put_u32(PCAP, pc + 8, 0xFFFFFFF0), pc, CORRUPT,
                PCAP[:pc]),
        Damaged("pcap-truncated", ".pcap", PCAP[: pc + 16 + 50], pc, TRUNCATED, PCAP[:pc]),
        Damaged("pcap-truncated-in-record-header", ".pcap", PCAP[: pc + 7], pc, TRUNCATED, PCAP[:pc]),
    ]  # fmt: skip


DAMAGED = damaged_captures()


def read(path: Path, **kw: object) -> tuple[list[Fragment | ConnEvent], PcapReader]:
    reader = PcapReader(path, **kw)  # type: ignore[arg-type]
    return list(reader), reader


@pytest.mark.parametrize("case", DAMAGED, ids=lambda c: c.name)
def test_damaged_file_is_read_up_to_the_damage_then_reported(tmp_path: Path, case: Damaged) -> None:
    bad, clean = tmp_path / f"bad{case.suffix}", tmp_path / f"clean{case.suffix}"
    bad.write_bytes(case.data)
    clean.write_bytes(case.prefix)
    health = Health()
    got, reader = read(bad, health=health, close_at_eof=True)
    want, clean_reader = read(clean, close_at_eof=True)
    assert got == want  # everything before the damage, connections flushed and closed at the end
    assert any(isinstance(e, Fragment) for e in got)
    assert clean_reader.damage is None
    assert reader.damage is not None
    assert (reader.damage.offset, reader.damage.reason) == (case.offset, case.reason)
    assert reader.stats.packets == clean_reader.stats.packets > 0
    assert health.snapshot() == {("capture_file_errors", "pcap", case.reason): 1}


def test_block_and_record_lengths_are_named_in_the_damage(tmp_path: Path) -> None:
    details = {}
    for case in DAMAGED:
        path = tmp_path / f"{case.name}{case.suffix}"
        path.write_bytes(case.data)
        reader = read(path)[1]
        assert reader.damage is not None
        details[case.name] = reader.damage.detail
    assert details["pcapng-block-length-0x0"] == "block length 0, not a multiple of 4 from 12 to 16 MiB"
    assert details["pcapng-block-length-0x5"] == "block length 5, not a multiple of 4 from 12 to 16 MiB"
    assert details["pcapng-block-length-0x7fffff00"].startswith("block length 2147483392,")
    assert details["pcapng-truncated"] == "a 132-byte block, 60 bytes of it in the file"
    assert details["pcapng-second-section-bad-byte-order"] == "section header byte-order magic 0x1a2b3c4e"
    assert details["pcap-incl-len-0xfffffff0"] == "packet record length 4294967280, more than 16 MiB"
    assert details["pcap-truncated"] == "a 136-byte packet, 50 bytes of it in the file"
    assert (
        details["pcap-truncated-in-record-header"]
        == "a 16-byte packet record header, 7 bytes of it in the file"
    )


def _peak_bytes(path: Path) -> int:
    tracemalloc.start()
    try:
        for _ in PcapReader(path):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("length", [0xFFFFFFF0, 0x00FFFFF0, 0x7FFFFF00])
def test_huge_lengths_allocate_nothing_big(tmp_path: Path, length: int) -> None:
    # A length field that claims gigabytes (or 16 MiB in a 12 KB file) must not be believed.
    pcap, ng = tmp_path / "huge.pcap", tmp_path / "huge.pcapng"
    pcap.write_bytes(put_u32(PCAP, pcap_records(PCAP)[3] + 8, length))
    ng.write_bytes(put_u32(PCAPNG, NG_DAMAGE + 4, length & ~3))
    for path in (pcap, ng):
        assert _peak_bytes(path) < 1 << 20, path.name


def test_unsupported_link_type_is_warned_once_and_its_packets_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "wifi.pcap"
    path.write_bytes(put_u32(PCAP, 20, 105))  # LINKTYPE_IEEE802_11 in the file header
    health = Health()
    with caplog.at_level(logging.WARNING, logger="l7scope.pcap"):
        got, reader = read(path, health=health)
    assert got == []
    n = len(pcap_records(PCAP))
    assert reader.stats.packets == reader.stats.unsupported_packets == n
    assert reader.unsupported == {105: n} and reader.damage is None
    assert health.snapshot() == {
        ("capture_file_errors", "pcap", UNSUPPORTED): 1,
        ("capture_lost_events", "pcap", UNSUPPORTED): n,
    }
    warnings = [r.getMessage() for r in caplog.records if r.name == "l7scope.pcap"]
    assert len(warnings) == 1
    assert "link type 105 (IEEE802_11)" in warnings[0] and "the capture has" in warnings[0]


def test_unsupported_interface_skips_only_its_packets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    second_idb = [off for off, btype in pcapng_blocks(PCAPNG) if btype == 1][1]
    path = tmp_path / "usb.pcapng"
    data = bytearray(PCAPNG)
    struct.pack_into("<H", data, second_idb + 8, 189)  # LINKTYPE_USB_LINUX for interface 1
    path.write_bytes(data)
    health = Health()
    with caplog.at_level(logging.WARNING, logger="l7scope.pcap"):
        got, reader = read(path, health=health)
    everything, _ = read(CAPTURES / "two-ifaces.pcapng")
    interface0 = [
        e
        for e in everything
        if (e.info.conn_id if isinstance(e, ConnEvent) else e.conn_id).startswith("pcap/127.")
    ]
    assert got == interface0 and got
    on_interface1 = sum(1 for off, btype in pcapng_blocks(PCAPNG) if btype == 6 and PCAPNG[off + 8] == 1)
    assert reader.unsupported == {189: on_interface1} and reader.stats.unsupported_packets == on_interface1
    assert health.total("capture_lost_events") == on_interface1
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "l7scope.pcap"]
    assert "interface 1 has link type 189 (USB_LINUX)" in warning


# -- pcapng sections and interfaces ------------------------------------------------------------------


def block(btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)


def odd_idb(resol: int = 0xFF, offset_s: int = -(10**12)) -> bytes:
    """An Ethernet interface with options that are unknown, odd or overrun their block."""
    opts = [
        struct.pack("<HH", 2, 7) + b"eth\x00\x1b[2" + b"\0",  # if_name with an escape sequence
        struct.pack("<HH", 9, 1) + bytes([resol]) + b"\0" * 3,  # if_tsresol: 2^-127 s by default
        struct.pack("<HH", 14, 8) + struct.pack("<q", offset_s),  # if_tsoffset: before 1970 by default
        struct.pack("<HH", 0xBEEF, 4) + b"????",  # unknown option
        struct.pack("<HH", 4, 0xFFF0),  # an option longer than its block: the rest is ignored
    ]
    return block(1, struct.pack("<HHI", 1, 0, 0) + b"".join(opts))


def test_many_interfaces_with_odd_options_leave_the_real_ones_intact(tmp_path: Path) -> None:
    blocks = pcapng_blocks(PCAPNG)
    shb_end, first_epb = blocks[1][0], blocks[3][0]
    junk = 3000
    packets = bytearray(PCAPNG[first_epb:])
    for off, btype in pcapng_blocks(PCAPNG):
        if btype == 6:  # the interface ids move past the junk interfaces
            struct.pack_into("<I", packets, off - first_epb + 8, junk + PCAPNG[off + 8])
    path = tmp_path / "many.pcapng"
    path.write_bytes(
        PCAPNG[:shb_end]
        + b"".join(odd_idb(0x7F if i % 2 else 0xFF) for i in range(junk))
        + PCAPNG[shb_end:first_epb]
        + packets
    )
    got, reader = read(path)
    assert got == read(CAPTURES / "two-ifaces.pcapng")[0]
    assert reader.damage is None


@pytest.mark.parametrize(
    ("resol", "offset_s", "hi", "ts_ns"),
    [(0xFF, -(10**12), 0xFFFFFFFF, 0), (0x7F, 0, 0xFFFFFFFF, 0), (0, 10**12, 0xFFFFFFFF, (1 << 63) - 1)],
)
def test_odd_interface_timestamps_are_clamped_to_what_exporters_encode(
    tmp_path: Path, resol: int, offset_s: int, hi: int, ts_ns: int
) -> None:
    first = pcapng_blocks(PCAPNG)[3][0]
    body = bytearray(PCAPNG[first + 8 : first + 108 - 4])  # the first SYN, on Ethernet
    struct.pack_into("<III", body, 0, 0, hi, 0xFFFFFFFF)
    path = tmp_path / "odd.pcapng"
    path.write_bytes(PCAPNG[:136] + odd_idb(resol, offset_s) + block(6, bytes(body)))
    got, reader = read(path)
    assert [e.ts_ns for e in got if isinstance(e, ConnEvent)] == [ts_ns]
    assert reader.damage is None


def test_too_many_interfaces_is_corrupt(tmp_path: Path) -> None:
    idb = block(1, struct.pack("<HHI", 1, 0, 0))
    path = tmp_path / "ifaces.pcapng"
    path.write_bytes(PCAPNG[:136] + idb * 70_000)
    tracemalloc.start()
    try:
        reader = read(path)[1]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reader.damage is not None
    assert (reader.damage.offset, reader.damage.reason) == (136 + 65_536 * len(idb), CORRUPT)
    assert peak < 32 << 20


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        (
            lambda d: put_u32(d, NG_DAMAGE + 8, 7),
            "a packet of interface 7, which the section did not describe",
        ),
        (lambda d: put_u32(d, NG_DAMAGE + 20, 4000), "a 4000-byte packet in a 132-byte block"),
        (lambda d: put_u32(d, NG_DAMAGE + 128, 136), "block length 132 at its start, 136 at its end"),
    ],
    ids=["undeclared-interface", "packet-longer-than-block", "lengths-differ"],
)
def test_inconsistent_packet_blocks_are_corrupt(tmp_path: Path, change, detail: str) -> None:
    path = tmp_path / "bad.pcapng"
    path.write_bytes(change(PCAPNG))
    reader = read(path)[1]
    assert reader.damage is not None
    assert (reader.damage.offset, reader.damage.reason, reader.damage.detail) == (NG_DAMAGE, CORRUPT, detail)


# -- files that are no capture at all: one error, before any event -------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty: name a capture written by tcpdump -w or Wireshark"),
        (random.Random(12).randbytes(4096), "is not a pcap or pcapng file (it starts with "),
        (b"GET / HTTP/1.1\r\n", "is not a pcap or pcapng file (it starts with 47 45 54 20)"),
        (b"\x1f\x8b\x08\x00" + PCAP[:50], "is gzip-compressed: decompress it first"),
        (PCAP[:10], "is a pcap file cut short in its 24-byte header (10 bytes)"),
        (PCAPNG[:100], "is a pcapng file cut short in its section header (100 of 136 bytes)"),
        (put_u32(PCAPNG, 8, 0x1A2B3C4E), "section header byte-order magic 0x1a2b3c4e"),
        (put_u32(PCAPNG, 4, 5), "section header length 5"),
        (put_u32(PCAPNG, 132, 140), "its section header's two lengths differ"),
    ],
    ids=["empty", "random", "text", "gzip", "pcap-header-cut", "shb-cut", "shb-byte-order", "shb-length",
         "shb-trailer"],
)  # fmt: skip
def test_not_a_capture(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError, match="^" + str(path).replace(".", r"\.")) as raised:
        check_capture(path)
    assert message in str(raised.value)
    with pytest.raises(CaptureFileError):
        list(PcapReader(path))


def test_not_a_file(tmp_path: Path) -> None:
    cases = {
        str(tmp_path): f"{tmp_path} is a directory: name a pcap or pcapng file",
        os.devnull: "/dev/null is a character device: name a pcap or pcapng file "
        "(save a stream to one first)",
        str(tmp_path / "missing.pcap"): f"{tmp_path}/missing.pcap does not exist: name a pcap or pcapng file",
    }
    for path, message in cases.items():
        with pytest.raises(CaptureFileError) as raised:
            check_capture(path)
        assert str(raised.value) == message
        with pytest.raises(CaptureFileError):
            list(PcapReader(path))


# -- the counts reach the metrics ------------------------------------------------------------------------


def test_damage_and_unsupported_packets_are_in_the_metrics(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from pipeline.red_metrics import RedMetrics, build_meter_provider

    cut, wifi = tmp_path / "cut.pcap", tmp_path / "wifi.pcap"
    cut.write_bytes(PCAP[: PCAP_DAMAGE + 20])
    wifi.write_bytes(put_u32(PCAP, 20, 105))
    health = Health()
    for path in (cut, wifi):
        read(path, health=health)
    metrics = InMemoryMetricReader()
    RedMetrics(build_meter_provider([metrics], node="n1"), health)
    data = metrics.get_metrics_data()
    assert data is not None
    by_name = {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def values(name: str) -> dict[frozenset[tuple[str, object]], object]:
        return {frozenset(p.attributes.items()): p.value for p in by_name[name].data.data_points}

    stage = ("l7scope.stage", "pcap")
    assert values("l7scope.capture.file_errors") == {
        frozenset({stage, ("reason", TRUNCATED)}): 1,
        frozenset({stage, ("reason", UNSUPPORTED)}): 1,
    }
    assert values("l7scope.capture.dropped") == {
        frozenset({stage, ("reason", UNSUPPORTED)}): len(pcap_records(PCAP))
    }
