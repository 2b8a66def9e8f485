"""DeepFlow's captures through `l7scope replay`, checked file by file against tshark's dissection.

An exchange is a request with its response (or a command that has none: QUIT, STMT_CLOSE). Where
DeepFlow's `.result` (one line per message, not per exchange) or tshark is wrong, NOTES says which and why.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.oracle import (
    replay,
    tshark_grpc_calls,
    tshark_http1_exchanges,
    tshark_mysql_exchanges,
)
from tests.support.corpus import CORPUS

pytestmark = pytest.mark.skipif(not shutil.which("tshark") or not CORPUS.is_dir(), reason="tshark or corpus")

# file -> (server port, what tshark decodes that port as)
FILES: dict[str, tuple[int, str]] = {
    "http/client-ip.pcap": (8080, "http"),
    "http/grpc-segmented.pcap": (20035, "http2"),
    "http/grpc-server-stream.pcap": (9001, "http2"),
    "http/grpc-service-name.pcap": (38888, "http2"),
    "http/grpc-unary.pcap": (30035, "http2"),
    "http/grpc-unknown.pcap": (7000, "http2"),
    "http/h2c_ascii.pcap": (7070, "http2"),
    "http/http2-multi.pcap": (3550, "http2"),
    "http/httpv1.pcap": (80, "http"),
    "http/httpv2-stream-id.pcap": (11800, "http2"),
    "http/istio-tcp-frag.pcap": (9080, "http"),
    "http/sw8.pcap": (20880, "http"),
    "mysql/171-mysql.pcap": (20130, "mysql"),
    "mysql/binary-in-sql.pcap": (2883, "mysql"),
    "mysql/large-response.pcap": (6033, "mysql"),
    "mysql/mysql-compressed-response.pcap": (30130, "mysql"),
    "mysql/mysql-database.pcap": (20130, "mysql"),
    "mysql/mysql-error.pcap": (20130, "mysql"),
    "mysql/mysql-exec.pcap": (30130, "mysql"),
    "mysql/mysql-login-error.pcap": (3306, "mysql"),
    "mysql/mysql-statement-id.pcap": (30130, "mysql"),
    "mysql/mysql-statement.pcap": (30130, "mysql"),
    "mysql/mysql-table-alter.pcap": (20130, "mysql"),
    "mysql/mysql-table-create.pcap": (20130, "mysql"),
    "mysql/mysql-table-delete.pcap": (20130, "mysql"),
    "mysql/mysql-table-desc.pcap": (20130, "mysql"),
    "mysql/mysql-table-destroy.pcap": (20130, "mysql"),
    "mysql/mysql-table-insert.pcap": (20130, "mysql"),
    "mysql/mysql-table-select.pcap": (20130, "mysql"),
    "mysql/mysql-table-update.pcap": (20130, "mysql"),
    "mysql/mysql-use.pcap": (3306, "mysql"),
    "mysql/mysql.pcap": (20130, "mysql"),
    "mysql/partial-packet-compressed.pcap": (30130, "mysql"),
    "mysql/truncate-1024.pcap": (6033, "mysql"),
}

# Where DeepFlow's .result and tshark disagree (we follow tshark unless said otherwise), and why.
NOTES: dict[str, str] = {
    "http/client-ip.pcap": (
        "DeepFlow: a POST and a 200 (headers of single packets). tshark: no exchange — the capture "
        "ends inside the request body and the chunked response, so neither message is complete."
    ),
    "http/grpc-segmented.pcap": (
        "DeepFlow: one request message; tshark: the call never ends in the capture, so no exchange. "
        'Agree on "no answered call".'
    ),
    "http/grpc-unary.pcap": (
        "DeepFlow: request + response HEADERS (status 200). tshark: the response never ends (no "
        "trailers, no END_STREAM in the capture): no exchange."
    ),
    "http/grpc-unknown.pcap": (
        "DeepFlow: request and status 200, no path. tshark: joined mid-connection, HPACK state "
        'unknown, so no :path either — our record is degraded, named only "grpc".'
    ),
    "http/http2-multi.pcap": (
        "DeepFlow: two 200s without paths. tshark: the same two streams, headers undecodable (HPACK "
        "desync) — ours are degraded, with what static/literal fields gave (POST, 200)."
    ),
    "http/httpv2-stream-id.pcap": (
        "DeepFlow: one request; tshark: a request stream that never ends: no exchange."
    ),
    "http/istio-tcp-frag.pcap": (
        "DeepFlow: GET /productpage and a 200 from a 17-byte first segment. tshark: the response is "
        "cut after its status line, so no complete response: no exchange."
    ),
    "mysql/mysql-compressed-response.pcap": (
        "tshark does not know the compressed protocol is on (joined mid-connection) and reads the "
        "request as COM_SLEEP; DeepFlow and we read the SELECT inside it (degraded)."
    ),
    "mysql/mysql-use.pcap": (
        "Compressed protocol, joined mid-connection: tshark reads COM_SLEEP, DeepFlow and we read "
        '"use `test`" inside the compressed packet.'
    ),
    "mysql/mysql-statement.pcap": (
        "DeepFlow lists 11 requests and 6 responses; tshark and we find 10 exchanges (3 requests are "
        "unanswered when the capture ends)."
    ),
    "mysql/partial-packet-compressed.pcap": (
        "Joined mid-connection with the client on the lower port (20871 < 30130): the replay reader's "
        "lower-port-is-server guess is wrong, and the content corrects it (role client, role_inferred). "
        "tshark reads the compressed stream as one SLEEP; DeepFlow's .result and we find the two queries "
        "(SELECT process, SELECT vip), both answered: this file is checked against DeepFlow."
    ),
}
TSHARK_MISREADS_COMMAND = {"mysql/mysql-compressed-response.pcap", "mysql/mysql-use.pcap"}
KNOWN_BROKEN: set[str] = set()
ROLE_GUESSED_WRONG = {"mysql/partial-packet-compressed.pcap"}


def _http1(pcap: Path, port: int, records: list[dict[str, Any]]) -> None:
    theirs = [(x["method"], x["uri"], x["status"]) for x in tshark_http1_exchanges(pcap, port) if x["status"]]
    ours = []
    for r in sorted(records, key=lambda r: r["start_ns"]):
        a = r["attributes"]
        uri = a["url.path"] + (f"?{a['url.query']}" if "url.query" in a else "")
        ours.append((a["http.request.method"], uri, a["http.response.status_code"]))
    assert ours == theirs


def _http2(pcap: Path, port: int, records: list[dict[str, Any]]) -> None:
    theirs = [c for c in tshark_grpc_calls(pcap, port) if "end_ns" in c]
    ours = sorted(records, key=lambda r: r["start_ns"])
    assert len(ours) == len(theirs)
    for r, c in zip(ours, theirs, strict=True):
        a = r["attributes"]
        if c["path"] is None:  # tshark could not decode the headers either: ours must say so
            assert r["degraded"]
            continue
        if r["protocol"] == "grpc":
            assert "/" + r["name"] == c["path"]
            assert a["rpc.service"] == c["path"][1:].rsplit("/", 1)[0]
            assert a.get("rpc.grpc.status_code") == c.get("grpc_status")
        else:
            assert a["url.path"] == c["path"]


def _mysql(name: str, pcap: Path, port: int, records: list[dict[str, Any]]) -> None:
    # An unanswered request is no exchange, unless its command has no answer (QUIT, STMT_CLOSE).
    theirs = [
        x for x in tshark_mysql_exchanges(pcap, port) if x["end_ns"] or x["operation"] in ("QUIT", "CLOSE")
    ]
    ours = sorted(records, key=lambda r: r["start_ns"])
    assert len(ours) == len(theirs)
    assert [r["error_type"] for r in ours] == [x["error"] for x in theirs]
    if name not in TSHARK_MISREADS_COMMAND:
        assert [r["attributes"].get("db.operation.name") for r in ours] == [x["operation"] for x in theirs]
    assert all(r["protocol"] == "mysql" for r in ours)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NOTES[n])) if n in KNOWN_BROKEN else n
     for n in sorted(FILES)],
)  # fmt: skip
def test_corpus_file_agrees_with_tshark(name: str, tmp_path: Path) -> None:
    port, kind = FILES[name]
    pcap = CORPUS / name
    records = replay(pcap, tmp_path)
    if name in ROLE_GUESSED_WRONG:  # a wrong guess is corrected by the content, and stays marked a guess
        assert records and all(r["role"] == "client" and r["role_inferred"] for r in records)
        assert {r["server"].rpartition(":")[2] for r in records} == {str(port)}
        assert [r["name"] for r in sorted(records, key=lambda r: r["start_ns"])] == [
            "SELECT process",
            "SELECT vip",
        ]
        assert all(r["error_type"] is None for r in records)
        return
    assert {r["role"] for r in records} <= {"server"}
    if kind == "http":
        _http1(pcap, port, records)
    elif kind == "http2":
        _http2(pcap, port, records)
    else:
        _mysql(name, pcap, port, records)


def test_every_corpus_capture_is_listed() -> None:
    assert sorted(str(p.relative_to(CORPUS)) for p in CORPUS.glob("*/*.pcap")) == sorted(FILES)
    assert set(NOTES) <= set(FILES)
