"""DeepFlow's MySQL captures: our commands and error codes against what tshark dissects."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REQ, pcap_segments, records, replay, tshark_commands

from protocols.mysql.types import K_COMMAND
from tests.support.corpus import CORPUS as DEEPFLOW

CORPUS = DEEPFLOW / "mysql"
CASES = {  # file -> server port
    "mysql-error.pcap": 20130,
    "mysql-login-error.pcap": 3306,
    "mysql-table-create.pcap": 20130,
    "mysql.pcap": 20130,
    "mysql-statement.pcap": 30130,
    "truncate-1024.pcap": 6033,
    "171-mysql.pcap": 20130,
}
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not CORPUS.is_dir() or not shutil.which("tshark"), reason="corpus or tshark"),
]


def _ours(path: Path, port: int) -> tuple[list[int], list[int], list]:
    commands: list[int] = []
    errors: list[int] = []
    recs = []
    segments = pcap_segments(path, port)
    for client in sorted(segments, key=lambda c: segments[c][0][0]):
        loop = replay(segments[client])
        assert loop.errors == []
        recs += records(loop.exchanges)
        commands += [x.command for x in loop.exchanges if x.command >= 0]
        commands += [t.frame.first for t in loop.queues[REQ] if t.frame.kind == K_COMMAND]  # unanswered
        errors += [x.error_code for x in loop.exchanges if x.error_code]
    return commands, errors, recs


@pytest.mark.parametrize("name", sorted(CASES))
def test_commands_and_errors_match_tshark(name: str) -> None:
    path = CORPUS / name
    commands, errors, _ = _ours(path, CASES[name])
    want_commands, want_errors = tshark_commands(path, CASES[name])
    assert sorted(commands) == sorted(want_commands)  # connections interleave in the capture
    assert errors == want_errors


def test_expected_details() -> None:
    _, _, recs = _ours(CORPUS / "mysql-error.pcap", 20130)
    assert [(r.name, r.error_type) for r in recs] == [
        ("LOGIN", None),
        ("SELECT", None),
        ("SELECT", None),
        ("INIT_DB", "1049"),
        ("QUIT", None),
    ]
    _, _, recs = _ours(CORPUS / "mysql-login-error.pcap", 3306)
    assert [(r.name, r.error_type, r.attributes.get("db.namespace")) for r in recs] == [
        ("LOGIN", "1040", "mydemo-dn1")
    ]
    _, _, recs = _ours(CORPUS / "mysql-compressed-response.pcap", 30130)
    assert [(r.name, r.degraded) for r in recs] == [("SELECT az_controller_connection", True)]
    _, _, recs = _ours(CORPUS / "partial-packet-compressed.pcap", 30130)
    assert [r.name for r in recs] == ["SELECT process", "SELECT vip"] and all(r.degraded for r in recs)
    _, _, recs = _ours(CORPUS / "mysql-statement.pcap", 30130)
    names = {r.name for r in recs}
    assert {"PREPARE controller", "SELECT controller", "CLOSE controller", "PREPARE sub_domain"} <= names
