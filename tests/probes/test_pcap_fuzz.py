"""Property tests: a real pcap/pcapng with flipped bits or cut anywhere in its headers is read without
raising anything but `CaptureFileError` (before any event), without hanging, in bounded memory."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from probes.fragment import ConnEvent, Fragment
from probes.pcap import CORRUPT, TRUNCATED, CaptureFileError, PcapReader, check_capture
from tests.probes.test_pcap_errors import PCAP, PCAPNG, pcap_records, pcapng_blocks
from tests.support.time_limit import time_limit

pytestmark = pytest.mark.slow  # cuts at every offset and bit flips: the full lane runs it

SMALL_PCAP = PCAP[: pcap_records(PCAP)[14]]  # the file header and 14 records: handshake and 4 exchanges
BASES = {"pcap": SMALL_PCAP, "pcapng": PCAPNG}
HEADERS = {  # every byte offset inside a file header, record header, block header or block trailer
    "pcap": sorted({*range(24), *(o + i for o in pcap_records(SMALL_PCAP) for i in range(16))}),
    "pcapng": sorted(
        {
            *(o + i for o, _ in pcapng_blocks(PCAPNG) for i in range(32)),
            *(o - i for o, _ in pcapng_blocks(PCAPNG)[1:] for i in range(1, 5)),
            *range(len(PCAPNG) - 4, len(PCAPNG)),
        }
    ),
}
BOUNDARIES = {  # where a record or block starts: a clean end of file
    "pcap": {*pcap_records(SMALL_PCAP), len(SMALL_PCAP)},
    "pcapng": {*(o for o, _ in pcapng_blocks(PCAPNG)), len(PCAPNG)},
}
FILE_HEADER = {"pcap": 24, "pcapng": pcapng_blocks(PCAPNG)[1][0]}  # the section header block for pcapng
MAX_SECONDS = 5.0
MAX_PEAK_BYTES = 4 << 20
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_checked(path: Path) -> None:
    """Read `path` fully and check what the reader promises, whatever the file holds."""
    size = path.stat().st_size
    reader = PcapReader(path, close_at_eof=True)
    opened: set[str] = set()
    started = time.monotonic()
    tracemalloc.start()
    try:
        with time_limit(MAX_SECONDS, "reading the file"):
            try:
                for event in reader:
                    assert 0 <= event.ts_ns < 1 << 63
                    if isinstance(event, ConnEvent):
                        opened.add(event.info.conn_id)
                    else:
                        assert isinstance(event, Fragment) and event.conn_id in opened
                        assert event.position >= 0 and event.length >= len(event.data) and event.length > 0
            except CaptureFileError:
                assert not opened  # raised before any event...
                with pytest.raises(CaptureFileError):  # ...and the up-front check agrees
                    check_capture(path)
                return
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_PEAK_BYTES, f"{peak} bytes at peak for a {size}-byte file"
    assert time.monotonic() - started < MAX_SECONDS
    damage = reader.damage
    if damage is not None:
        assert 0 <= damage.offset < size and damage.reason in (TRUNCATED, CORRUPT) and damage.detail


@pytest.mark.parametrize("kind", list(BASES))
def test_cut_at_every_header_offset(tmp_path: Path, kind: str) -> None:
    base, path = BASES[kind], tmp_path / f"cut.{kind}"
    for cut in sorted({*HEADERS[kind], *BOUNDARIES[kind]}):
        path.write_bytes(base[:cut])
        read_checked(path)
        reader = PcapReader(path)
        if cut < FILE_HEADER[kind]:  # nothing readable: refused before anything starts
            with pytest.raises(CaptureFileError):
                list(reader)
        else:  # a damaged capture, unless cut where a record starts: never an exception
            list(reader)
            assert (reader.damage is None) == (cut in BOUNDARIES[kind]), cut


def flips(kind: str) -> st.SearchStrategy[list[tuple[int, int]]]:
    """(byte offset, bit) pairs: mostly in headers, where lengths and types live; some anywhere."""
    size = len(BASES[kind])
    offset = st.one_of(st.sampled_from(HEADERS[kind]), st.integers(0, size - 1))
    return st.lists(st.tuples(offset, st.integers(0, 7)), min_size=1, max_size=8)


def mutate(base: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    data = bytearray(base)
    for offset, bit in changes:
        data[offset] ^= 1 << bit
    return bytes(data[:cut] if cut is not None else data)


@FUZZ
@given(changes=flips("pcap"), cut=st.one_of(st.none(), st.sampled_from(HEADERS["pcap"])))
def test_pcap_bit_flips_and_cuts(tmp_path: Path, changes: list[tuple[int, int]], cut: int | None) -> None:
    path = tmp_path / "fuzz.pcap"
    path.write_bytes(mutate(SMALL_PCAP, changes, cut))
    read_checked(path)


@FUZZ
@given(changes=flips("pcapng"), cut=st.one_of(st.none(), st.sampled_from(HEADERS["pcapng"])))
def test_pcapng_bit_flips_and_cuts(tmp_path: Path, changes: list[tuple[int, int]], cut: int | None) -> None:
    path = tmp_path / "fuzz.pcapng"
    path.write_bytes(mutate(PCAPNG, changes, cut))
    read_checked(path)


@FUZZ
@given(
    offset=st.sampled_from(HEADERS["pcapng"]),
    value=st.sampled_from([0, 5, 12, 0x7FFFFF00, 0xFFFFFFFF, 0xFFFFFFF0, 0x00FFFFFC, 0x01000000]),
)
def test_pcapng_length_fields_set_to_extremes(tmp_path: Path, offset: int, value: int) -> None:
    data = bytearray(PCAPNG)
    offset = min(offset, len(data) - 4)
    data[offset : offset + 4] = value.to_bytes(4, "little")
    path = tmp_path / "extreme.pcapng"
    path.write_bytes(data)
    read_checked(path)
