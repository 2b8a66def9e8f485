"""Shared by the conformance tests: record with tcpdump, run `l7scope replay`, ask tshark (the oracle)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.l7scope_proc import run_l7scope

REPO = Path(__file__).resolve().parents[2]
TOLERANCE_NS = 1_000_000  # request/response times agree with tshark's frame times within 1 ms

needs_tools = pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("tcpdump") and shutil.which("tshark")),
    reason="needs root, tcpdump and tshark",
)


class Tcpdump:
    """`tcpdump -i lo --immediate-mode -w PATH port P`: armed before the traffic, SIGINT after it."""

    def __init__(self, path: Path, port: int) -> None:
        self.path = path
        self.proc = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-U", "-s", "0", "-B", "32768", "--immediate-mode", "-w", str(path),
             "tcp", "port", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), False)
        deadline, seen = time.monotonic() + 10, b""
        while b"listening on" not in seen:  # printed once the capture is attached to the interface
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise RuntimeError(f"tcpdump did not start: {seen.decode(errors='replace')}")
            seen += self.proc.stderr.read() or b""
            time.sleep(0.02)

    def __enter__(self) -> Tcpdump:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        # Packets not yet written are lost on SIGINT: wait until the file stops growing first.
        deadline, size, still = time.monotonic() + 15, -1, 0
        while still < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.path.stat().st_size if self.path.exists() else 0
            still, size = (still + 1, size) if now == size else (0, now)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        assert self.proc.stderr is not None
        os.set_blocking(self.proc.stderr.fileno(), True)
        report = self.proc.stderr.read().decode(errors="replace")
        assert "\n0 packets dropped by kernel" in report, report


def replay(pcap: Path, out_dir: Path) -> list[dict[str, Any]]:
    """`l7scope replay PCAP --export jsonl:OUT` as a child process; its records, in file order."""
    out = out_dir / f"{pcap.stem}.jsonl"
    out.unlink(missing_ok=True)
    proc = run_l7scope("replay", str(pcap), "--export", f"jsonl:{out}", cwd=REPO, timeout_s=300,
                       env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line]


def tshark(
    pcap: Path,
    fields: list[str],
    *,
    decode: str | None = None,
    where: str | None = None,
    options: tuple[str, ...] = (),
) -> list[list[str]]:
    """`tshark -T fields` rows (one per frame, tab-separated fields; repeated values comma-joined)."""
    cmd = ["tshark", "-r", str(pcap), "-n", *options]
    if decode:
        cmd += ["-d", decode]
    if where:
        cmd += ["-Y", where]
    cmd += ["-T", "fields", "-E", "separator=/t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for f in fields:
        cmd += ["-e", f]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True)
    rows: list[list[str]] = []
    pending = ""
    for line in proc.stdout.split("\n"):
        pending = f"{pending}\n{line}" if pending else line
        if pending.count("\t") >= len(fields) - 1:  # a value may hold newlines (SQL text)
            rows.append(pending.split("\t"))
            pending = ""
    return rows


def values(field: str) -> list[str]:
    """The occurrences of one field in a row (several PDUs in one frame); no test value holds a comma."""
    return [v for v in field.split(",") if v] if field else []


def epoch_ns(text: str) -> int:
    """tshark's frame.time_epoch ("1700000000.123456789") as integer nanoseconds, without float loss."""
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def client_port(record: dict[str, Any]) -> int:
    return int(record["client"].rsplit(":", 1)[1])


def assert_close(ours: int, theirs: int, what: str) -> None:
    off_ms = (ours - theirs) / 1e6
    assert abs(ours - theirs) <= TOLERANCE_NS, f"{what}: ours {ours} vs tshark {theirs} ({off_ms:+.3f} ms)"


@dataclass(slots=True)
class H2Frame:
    """One HTTP/2 frame as tshark dissected it (from PDML: several frames in one packet stay apart)."""

    ts_ns: int
    src_port: int
    dst_port: int
    tcp_stream: int
    stream_id: int
    kind: int
    end_stream: bool
    headers: dict[str, str] = field(default_factory=dict)


def h2_frames(pcap: Path, port: int, options: tuple[str, ...] = ()) -> list[H2Frame]:
    """Every HTTP/2 frame tshark finds with the server's port decoded as HTTP/2, in capture order."""
    proc = subprocess.run(
        ["tshark", "-r", str(pcap), "-n", *options, "-d", f"tcp.port=={port},http2", "-Y", "http2",
         "-T", "pdml"],
        capture_output=True, timeout=300, check=True,
    )  # fmt: skip
    out: list[H2Frame] = []
    for packet in ET.fromstring(proc.stdout).iter("packet"):
        fields = {
            f.get("name"): f.get("show", "")
            for f in packet.iter("field")
            if f.get("name", "").startswith(("frame.time_epoch", "tcp.srcport", "tcp.dstport", "tcp.stream"))
        }
        ts, sport, dport = (
            epoch_ns(fields["frame.time_epoch"]),
            int(fields["tcp.srcport"]),
            int(fields["tcp.dstport"]),
        )
        for stream in packet.iter("field"):
            if stream.get("name") != "http2.stream":
                continue
            kids = {f.get("name"): f.get("show", "") for f in stream.iter("field")}
            if "http2.type" not in kids:  # the connection preface
                continue
            headers = {}
            for h in stream.iter("field"):
                if h.get("name") == "http2.header":
                    parts = {f.get("name"): f.get("show", "") for f in h}
                    headers[parts.get("http2.header.name", "")] = parts.get("http2.header.value", "")
            out.append(
                H2Frame(
                    ts,
                    sport,
                    dport,
                    int(fields["tcp.stream"]),
                    int(kids["http2.streamid"]),
                    int(kids["http2.type"]),
                    kids.get("http2.flags.end_stream") == "1",
                    headers,
                )
            )
    return out


def tshark_http1_exchanges(pcap: Path, port: int) -> list[dict[str, Any]]:
    """tshark's requests, each with the response tshark dissected for it: in order per connection, as
    HTTP/1.1 answers (tshark's own http.request_in links only the first of a pipelined batch)."""
    rows = tshark(
        pcap,
        ["tcp.stream", "frame.time_epoch", "tcp.srcport", "tcp.dstport", "http.request.method",
         "http.request.uri", "http.response.code"],
        decode=f"tcp.port=={port},http", where="http.request || http.response",
    )  # fmt: skip
    out: list[dict[str, Any]] = []
    waiting: dict[str, list[dict[str, Any]]] = {}
    for stream, when, sport, dport, methods, uris, codes in rows:
        ts = epoch_ns(when)
        if int(dport) == port:
            for method, uri in zip(values(methods), values(uris), strict=True):
                x = {"method": method, "uri": uri, "status": None, "client": int(sport), "start_ns": ts,
                     "end_ns": None}  # fmt: skip
                out.append(x)
                waiting.setdefault(stream, []).append(x)
        else:
            for code in values(codes):
                if code.startswith("1"):  # interim (curl's Expect: 100-continue): the final one follows
                    continue
                waiting[stream].pop(0).update(status=int(code), end_ns=ts)
    return sorted(out, key=lambda x: x["start_ns"])


def tshark_grpc_calls(pcap: Path, port: int) -> list[dict[str, Any]]:
    """One call per HTTP/2 stream: times of the request HEADERS frame and of the frame ending the response."""
    calls: dict[tuple[int, int], dict[str, Any]] = {}
    for f in h2_frames(pcap, port):
        if f.stream_id == 0:
            continue
        client = f.src_port if f.dst_port == port else f.dst_port
        key = (client, f.stream_id)
        if f.dst_port == port:
            if f.kind == 1 and key not in calls:
                calls[key] = {"path": f.headers.get(":path"), "client": client, "start_ns": f.ts_ns}
        elif key in calls:
            if "grpc-status" in f.headers:
                calls[key]["grpc_status"] = int(f.headers["grpc-status"])
            if f.end_stream:
                calls[key]["end_ns"] = f.ts_ns
    return sorted(calls.values(), key=lambda c: c["start_ns"])


# tshark's command byte -> the operation our record names (COM_QUERY / COM_STMT_EXECUTE: the SQL keyword).
COMMANDS = {1: "QUIT", 2: "INIT_DB", 4: "FIELD_LIST", 14: "PING", 22: "PREPARE", 25: "CLOSE", 26: "RESET"}


def tshark_mysql_exchanges(pcap: Path, port: int) -> list[dict[str, Any]]:
    """Client messages that start an exchange (a command, or the login) and the server bytes after them."""
    rows = tshark(
        pcap,
        ["tcp.stream", "frame.time_epoch", "tcp.srcport", "tcp.dstport", "mysql.command", "mysql.query",
         "mysql.error_code", "mysql.stmt_id", "mysql.user"],
        decode=f"tcp.port=={port},mysql", where="tcp.len > 0",
    )  # fmt: skip
    out: list[dict[str, Any]] = []
    current: dict[str, dict[str, Any]] = {}
    prepared: dict[str, str] = {}  # statement id -> SQL, from the PREPARE's OK
    for stream, when, sport, dport, command, query, error, stmt, user in rows:
        ts = epoch_ns(when)
        x = current.get(stream)
        if int(dport) == port:
            if not (command or user):
                continue  # more of the same exchange (an auth switch answer)
            x = {"client": int(sport), "start_ns": ts, "end_ns": None, "error": None, "query": query or None}
            if user:
                x["operation"] = "LOGIN"
            else:
                code = int(values(command)[0])
                if code == 3:
                    x["operation"] = query.split()[0].upper()
                elif code == 23:
                    x["query"] = prepared.get(stmt)  # None when the PREPARE was before the capture
                    x["operation"] = x["query"].split()[0].upper() if x["query"] else None
                else:
                    x["operation"] = COMMANDS.get(code, str(code))
                    x["query"] = prepared.get(stmt) if code in (25, 26) else query or None
            out.append(x)
            current[stream] = x
        elif x is not None:
            x["end_ns"] = ts
            if error:
                x["error"] = values(error)[0]
            if x["operation"] == "PREPARE" and stmt:
                prepared[stmt] = x["query"]
    return out
