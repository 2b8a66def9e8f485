from pipeline.stream import DataStream


def test_in_order_and_out_of_order_pieces_join_by_position() -> None:
    s = DataStream()
    s.add(0, 5, b"hello", 10)
    s.add(11, 5, b"world", 30)  # arrives before the piece it follows
    assert bytes(s.head()) == b"hello"
    assert s.blocked
    s.add(5, 6, b" big, ", 20)
    assert bytes(s.head()) == b"hello big, world"
    assert not s.blocked
    assert [s.ts_at(p) for p in (0, 4, 5, 10, 11, 15)] == [10, 10, 20, 20, 30, 30]


def test_duplicates_and_overlaps_are_dropped() -> None:
    s = DataStream()
    s.add(0, 4, b"abcd", 1)
    s.add(0, 4, b"abcd", 2)
    s.add(2, 4, b"cdef", 3)
    assert bytes(s.head()) == b"abcdef"
    assert s.stats.duplicate_bytes == 6


def test_uncopied_bytes_are_zero_filled_within_the_limit() -> None:
    s = DataStream(fill_limit=100)
    s.add(0, 10, b"abc", 1)  # the syscall moved 10 bytes, 3 were copied
    s.add(10, 2, b"xy", 2)
    assert bytes(s.head()) == b"abc" + bytes(7) + b"xy"
    assert s.filled_between(3, 4) and not s.filled_between(0, 3) and not s.filled_between(10, 12)
    assert s.stats.filled_bytes == 7


def test_uncopied_bytes_past_the_limit_become_a_gap_after_the_head_is_parsed() -> None:
    s = DataStream(fill_limit=4)
    s.add(0, 100, b"head", 1)
    s.add(100, 3, b"new", 2)
    assert bytes(s.head()) == b"head"  # still parseable
    assert s.blocked
    assert s.cross_gap()
    assert s.gap_crossed and s.position == 100
    assert bytes(s.head()) == b"new"
    assert s.stats.gap_bytes == 96


def test_a_hole_is_crossed_only_when_forced() -> None:
    s = DataStream()
    s.add(0, 2, b"ab", 1)
    s.add(5, 2, b"fg", 2)
    assert not s.cross_gap()
    assert s.cross_gap(force=True)
    assert s.position == 5 and bytes(s.head()) == b"fg"
    assert s.stats.gaps == 1 and s.stats.gap_bytes == 3


def test_pending_bytes_are_bounded() -> None:
    s = DataStream(max_pending_bytes=10)
    s.add(0, 1, b"a", 1)
    for i in range(5):
        s.add(10 + 4 * i, 4, b"wxyz", 2)
    assert s.stats.gaps == 1  # the hole was given up once the held bytes passed the bound
    assert bytes(s.head()).startswith(b"wxyz")


def test_a_stream_joined_mid_way_starts_at_its_first_fragment() -> None:
    s = DataStream()
    s.add(1000, 3, b"xyz", 1)
    assert s.position == 1000 and bytes(s.head()) == b"xyz"


def test_consume_and_compaction_keep_positions_and_times() -> None:
    s = DataStream()
    pos = 0
    for i in range(100):
        s.add(pos, 1000, bytes([i % 256]) * 1000, i)
        pos += 1000
    s.consume(70_000)
    assert s.position == 70_000
    assert s.ts_at(70_000) == 70 and s.ts_at(99_999) == 99
    assert bytes(s.head()[:1]) == bytes([70])


def test_skip_passes_bytes_that_have_not_arrived_without_buffering_them() -> None:
    s = DataStream()
    s.add(0, 10, b"HEAD:body-", 1)
    s.skip(5 + 1_000_000)  # the head, then a body of a million bytes, most still to come
    assert s.skipping and len(s) == 0 and s.skip_ts == 1
    for i, pos in enumerate(range(10, 1_000_005, 65536)):
        n = min(65536, 1_000_005 - pos)
        s.add(pos, n, b"b" * n, 10 + i)
        assert len(s) == 0 and len(s._buf) == 0  # nothing of the body is kept
    assert not s.skipping and s.position == 1_000_005 and s.skip_ts == 10 + i
    s.add(1_000_005, 4, b"NEXT", 99)
    assert bytes(s.head()) == b"NEXT" and s.ts_at(1_000_005) == 99
    assert not s.skip_cut and s.stats.skipped_bytes == 1_000_005 and s.stats.gaps == 0


def test_skip_ends_inside_a_piece_and_keeps_the_rest() -> None:
    s = DataStream()
    s.add(0, 4, b"HEAD", 1)
    s.skip(10)
    s.add(4, 10, b"bodyXXnext", 2)
    assert not s.skipping and bytes(s.head()) == b"next" and s.position == 10 and s.skip_ts == 2


def test_uncopied_and_lost_bytes_inside_a_skipped_body_are_no_gap_but_cut() -> None:
    s = DataStream(fill_limit=4)
    s.add(0, 100_000, b"HEAD" + b"b" * 100, 1)  # a big write: 104 bytes copied, the rest counted only
    assert s.blocked  # without a skip, a gap would follow the head
    s.skip(99_996 + 4)  # the head and its body, exactly to the end of the write
    assert not s.skipping and not s.blocked and s.skip_cut and s.skip_ts == 1
    s.add(100_000, 4, b"NEXT", 2)
    assert bytes(s.head()) == b"NEXT" and s.stats.gaps == 0 and not s.gap_crossed


def test_lost_bytes_past_the_skipped_body_are_still_a_gap() -> None:
    s = DataStream(fill_limit=4)
    s.add(0, 100_000, b"HEAD", 1)
    s.skip(50_000)
    assert not s.skipping and s.blocked  # 50,000 more bytes were never copied: the next message is lost
    assert s.cross_gap() and s.gap_crossed and s.position == 100_000


def test_a_hole_inside_a_skipped_body_cuts_it_and_a_hole_after_it_is_kept() -> None:
    s = DataStream()
    s.add(0, 4, b"HEAD", 1)
    s.skip(1004)
    s.add(500, 100, b"b" * 100, 2)  # 4..500 never came (lost events)
    assert s.skipping and s.skip_cut
    s.add(1104, 4, b"LATE", 3)  # the body's end and the next message's start never came either
    assert not s.skipping and s.position == 1004 and s.blocked
    s.add(1004, 100, b"n" * 100, 4)  # the next message after all
    assert not s.blocked and bytes(s.head()) == b"n" * 100 + b"LATE"
