"""Real traffic: grpcio server + client over h2c on 127.0.0.1, captured by tcpdump, parsed from the pcap."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dpkt
import grpc
import pytest
from h2_traffic import REQ, RESP, drive

from protocols.base import ConnInfo, Endpoint, Role
from protocols.http2 import SPEC
from tests.support.grpc_echo import SERVICE, echo_server

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(shutil.which("tcpdump") is None or os.geteuid() != 0, reason="needs tcpdump and root"),
]


def _calls(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        assert ch.unary_unary(f"/{SERVICE}/Unary")(b"ping", timeout=10) == b"pong:ping"
        assert list(ch.unary_stream(f"/{SERVICE}/ServerStream")(b"x", timeout=10)) == [b"s0", b"s1", b"s2"]
        four = iter([b"a", b"bb", b"c", b"d"])
        assert ch.stream_unary(f"/{SERVICE}/ClientStream")(four, timeout=10) == b"4"
        assert list(ch.stream_stream(f"/{SERVICE}/Bidi")(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]
        with pytest.raises(grpc.RpcError) as err:
            ch.unary_unary(f"/{SERVICE}/Fail")(b"q", timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _capture(tmp_path: Path) -> tuple[Path, int]:
    with echo_server() as port:
        return _record(tmp_path, port)


def _record(tmp_path: Path, port: int) -> tuple[Path, int]:
    pcap = tmp_path / "grpc.pcap"
    # --immediate-mode: without it packets still in the kernel ring are lost on SIGINT.
    dump = subprocess.Popen(
        [
            "tcpdump",
            "-i",
            "lo",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-w",
            str(pcap),
            "tcp",
            "port",
            str(port),
        ],
        stderr=subprocess.PIPE,
    )
    try:
        assert dump.stderr is not None
        line = dump.stderr.readline()  # "listening on lo ..." once the capture is armed
        assert b"listening" in line, line
        _calls(port)
        time.sleep(0.3)
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
    return pcap, port


def _chunks(pcap: Path, port: int) -> dict[tuple[int, int], list]:
    """Per connection (client port), each TCP payload in capture order, deduplicated by sequence."""
    conns: dict[tuple[int, int], list] = {}
    seen: set[tuple[int, int, int]] = set()
    with pcap.open("rb") as fh:
        for ts, raw in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(raw).data
            tcp = ip.data
            if not isinstance(tcp, dpkt.tcp.TCP) or not tcp.data:
                continue
            key = (tcp.sport, tcp.dport, tcp.seq)
            if key in seen:
                continue  # a retransmission
            seen.add(key)
            direction = REQ if tcp.dport == port else RESP
            client = tcp.sport if direction is REQ else tcp.dport
            conns.setdefault((client, port), []).append((direction, bytes(tcp.data), int(ts * 1e9)))
    return conns


def test_grpcio_calls_captured_on_loopback(tmp_path: Path) -> None:
    pcap, port = _capture(tmp_path)
    conns = _chunks(pcap, port)
    assert conns, "nothing captured"
    recs, exchanges = [], []
    for (client_port, _), chunks in conns.items():
        assert SPEC.detect(chunks[0][1], chunks[0][0])
        out, state = drive([(d, b) for d, b, _ in chunks])
        assert out.invalid == 0 and state.hpack[0].synced and state.hpack[1].synced
        conn = ConnInfo("t", Endpoint("127.0.0.1", port), Endpoint("127.0.0.1", client_port), Role.SERVER)
        recs += [SPEC.to_record(x, conn) for x in out.exchanges]
        exchanges += [(x, conn) for x in out.exchanges]
    got = [
        (
            r.protocol, r.name, r.attributes["rpc.grpc.status_code"], r.error_type,
            r.attributes["rpc.request.message.count"], r.attributes["rpc.response.message.count"], r.degraded,
        )
        for r in recs
    ]  # fmt: skip
    assert got == [
        ("grpc", f"{SERVICE}/Unary", 0, None, 1, 1, False),
        ("grpc", f"{SERVICE}/ServerStream", 0, None, 1, 3, False),
        ("grpc", f"{SERVICE}/ClientStream", 0, None, 4, 1, False),
        ("grpc", f"{SERVICE}/Bidi", 0, None, 2, 2, False),
        ("grpc", f"{SERVICE}/Fail", 5, None, 1, 0, False),  # a server's NOT_FOUND is not its error
    ]
    x, conn = exchanges[-1]  # the same call seen by the client is an error
    assert SPEC.to_record(x, dataclasses.replace(conn, role=Role.CLIENT)).error_type == "NOT_FOUND"
    sizes = [
        (r.attributes["rpc.request.message.size"], r.attributes["rpc.response.message.size"]) for r in recs
    ]
    assert sizes == [(4, 9), (1, 6), (5, 1), (2, 2), (1, 0)]
    assert all(r.attributes["rpc.service"] == SERVICE and r.start_ns < r.end_ns for r in recs)
