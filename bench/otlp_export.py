"""Span export against a collector that is healthy, down, or accepts and never answers: what capture keeps.

  python -m bench.otlp_export                                 # every mode, 500 req/s for 8 s
  python -m bench.otlp_export --rate 1000 --modes healthy,down --protocol grpc
  python -m bench.otlp_export --root /tmp/l7-before           # another checkout's l7scope, same load

`l7scope run --no-table --export jsonl:F` with default settings (CPU budget 0.25 core) traces nginx
while a paced client (tests/support/paced_load.py) sends GET /ok at --rate over 4 keep-alive
connections; capture is limited to nginx's port (`capture.only_ports`, an in-kernel filter) so that
other traffic on the host stays out of the counts. Per mode it prints: requests nginx served (its
stub_status counter), the server-side records in the JSONL file, the server spans the OTLP receiver
got, l7scope's CPU over the load window (and its busiest threads), the SIGTERM-to-exit time, and the
export counters of the stop summary. Modes: `none` (no OTLP),
`healthy` (tests/support/otlp_receiver.py in this process), `down` (nothing listens), `blackhole`
(a socket listens and never reads), `recover` (down for the first half of the load, then healthy).
Run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.capture_overhead import cpu_seconds, thread_cpu  # noqa: E402
from tests.support.kafka_broker import free_port  # noqa: E402
from tests.support.l7scope_proc import L7scopeProcess  # noqa: E402
from tests.support.otlp_receiver import OtlpReceiver  # noqa: E402
from tests.support.paced_load import nginx_with_status, paced_get, served_requests  # noqa: E402


def blackhole() -> tuple[socket.socket, int]:
    """A socket that listens and never accepts or reads: connects succeed, requests are never answered."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, int(sock.getsockname()[1])


def one_mode(mode: str, args: argparse.Namespace, work: Path, port: int, status_port: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
    env["L7SCOPE_CAPTURE_HEADER_CACHE"] = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope") + "/headers"
    env["PYTHONPATH"] = str(args.root)
    env["L7SCOPE_CAPTURE_ONLY_PORTS"] = str(port)  # this nginx only: other traffic on the host stays out
    if args.budget is not None:
        env["L7SCOPE_CAPTURE_MAX_CPU"] = str(args.budget)
    receiver: OtlpReceiver | None = None
    hole: socket.socket | None = None
    otlp_port = free_port()
    if mode == "healthy":
        receiver = OtlpReceiver().start()
        otlp_port = receiver.grpc_port if args.protocol == "grpc" else receiver.http_port
    elif mode == "blackhole":
        hole, otlp_port = blackhole()
    if mode != "none":
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{otlp_port}"
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = args.protocol
        if not args.metrics:
            env["OTEL_METRICS_EXPORTER"] = "none"  # spans only
    jsonl = work / f"{mode}.jsonl"
    run = L7scopeProcess("run", "--no-table", "--export", f"jsonl:{jsonl}", env=env, cwd=args.root)
    try:
        time.sleep(1.0)
        before_served, cpu0, t0 = served_requests(status_port), cpu_seconds(run.proc.pid), time.monotonic()
        threads0 = thread_cpu(run.proc.pid)
        if mode == "recover":
            half = args.seconds / 2
            paced_get(port, args.rate, half)
            ports = {"grpc_port" if args.protocol == "grpc" else "http_port": otlp_port}
            receiver = OtlpReceiver(**ports).start()  # the collector comes back
            paced_get(port, args.rate, args.seconds - half)
        else:
            paced_get(port, args.rate, args.seconds)
        wall = time.monotonic() - t0
        cpu = (cpu_seconds(run.proc.pid) - cpu0) / wall
        after = thread_cpu(run.proc.pid)
        threads = sorted((v - threads0.get(t, 0.0) for t, v in after.items()), reverse=True)
        served = served_requests(status_port) - before_served - 1  # the second status request counts itself
        time.sleep(args.settle)
    finally:
        took = run.stop()
        if hole is not None:
            hole.close()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []
    mine = sum(r["server"] == f"127.0.0.1:{port}" and r["role"] == "server" for r in records)
    spans = -1
    if receiver is not None:
        spans = sum(
            s["kind"] == "SERVER" and s["attributes"].get("server.port") == port for s in receiver.spans()
        )
        receiver.stop()
    summary = run.log("pipeline stopped")
    losses = {k: v for k, v in summary.items() if k.startswith(("export_", "capture_", "dropped"))}
    busiest = [round(100 * t / wall) for t in threads[:4]]
    print(f"{mode:9} served {served:5}  jsonl {mine:5} ({100 * mine / max(served, 1):5.1f}%)  spans "
          f"{spans:5} ({100 * spans / max(served, 1):5.1f}%)  CPU {100 * cpu:5.1f}%  stop {took:4.1f} s  "
          f"threads % {busiest}  {losses}  {summary.get('losses', '')}", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=500)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the load and SIGTERM")
    p.add_argument("--modes", default="none,healthy,down,blackhole,recover")
    p.add_argument("--protocol", default="http/protobuf", choices=("http/protobuf", "grpc"))
    p.add_argument("--metrics", action="store_true", help="OTLP metrics to the same endpoint too (default)")
    p.add_argument("--budget", type=float, help="capture.max_cpu (default: the default, 0.25)")
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose l7scope runs")
    args = p.parse_args()
    args.root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="l7otlp-") as tmp:
        work = Path(tmp)
        with nginx_with_status(work / "nginx") as (port, status_port):
            paced_get(port, args.rate, 1.0)  # warm-up
            for mode in [m for m in args.modes.split(",") if m]:
                one_mode(mode, args, work, port, status_port)


if __name__ == "__main__":
    main()
