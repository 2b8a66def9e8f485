"""What Go TLS capture costs a Go HTTPS server: wrk (HTTP/1.1 over TLS, keep-alive) against the Go
net/http test peer (tests/probes/go_tls_peer) bare and under `l7scope run --no-table --export jsonl`,
interleaved rounds in one run.

  python -m bench.go_tls [--rounds 3] [--seconds 8] [--connections 4] [--side server|both]

--side server traces only the Go server's pid (the Go uprobes alone); both traces the port, so wrk's
OpenSSL side is captured through the libssl uprobes too. Prints req/s per round, the ratio of the
medians, the agent's CPU over each traced window and the records it wrote. Run as root.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.probes.capture_helpers import free_port  # noqa: E402
from tests.support.go_peers import build_peers  # noqa: E402
from tests.support.servers import self_signed_cert  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", f"https://127.0.0.1:{port}/hello/x"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout  # fmt: skip
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not found:
        raise RuntimeError(f"wrk printed no rate:\n{out}")
    return float(found.group(1))


def start_agent(env: dict[str, str], out: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "l7scope.cli", "run", "--no-table", "--export", f"jsonl:{out}"]
    agent = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert agent.stderr is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = agent.stderr.readline()
        if not line or "capturing" in line:
            break
    if agent.poll() is not None:
        raise RuntimeError("the agent did not start")
    return agent


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--side", choices=("server", "both"), default="server")
    parser.add_argument("--agent-env", action="append", default=[], help="K=V for the agent, e.g. "
                        "L7SCOPE_CAPTURE_GO_TLS=false to see what the rest of capture costs")  # fmt: skip
    args = parser.parse_args()
    peer = build_peers()[0]
    work = Path(tempfile.mkdtemp(prefix="l7-go-tls-bench-"))
    cert = self_signed_cert(work)
    port = free_port()
    server = subprocess.Popen([str(peer), "server", f"127.0.0.1:{port}", str(cert[0]), str(cert[1])],
                              stdout=subprocess.PIPE)  # fmt: skip
    assert server.stdout is not None and server.stdout.readline() == b"ready\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("L7SCOPE_")}
    env["L7SCOPE_CAPTURE_HEADER_CACHE"] = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope") + "/headers"
    env["PYTHONPATH"] = str(ROOT)
    if args.side == "server":
        env["L7SCOPE_CAPTURE_ONLY_PIDS"] = str(server.pid)
    else:
        env["L7SCOPE_CAPTURE_ONLY_PORTS"] = str(port)
    env.update(item.split("=", 1) for item in args.agent_env)  # type: ignore[misc]
    bare: list[float] = []
    traced: list[float] = []
    try:
        wrk(port, 2, args.connections)  # warm-up
        for i in range(args.rounds):
            bare.append(wrk(port, args.seconds, args.connections))
            out = work / f"records-{i}.jsonl"
            agent = start_agent(env, out)
            try:
                time.sleep(1.0)
                cpu0, t0 = cpu_seconds(agent.pid), time.monotonic()
                traced.append(wrk(port, args.seconds, args.connections))
                cpu = (cpu_seconds(agent.pid) - cpu0) / (time.monotonic() - t0)
                time.sleep(2.0)
            finally:
                agent.terminate()
                agent.wait(timeout=30)
            records = len(out.read_text().splitlines()) if out.exists() else 0
            load = os.getloadavg()[0]
            print(f"round {i + 1}: bare {bare[-1]:,.0f} req/s, traced {traced[-1]:,.0f} req/s, agent CPU "
                  f"{cpu:.2f} core, {records:,} records, load {load:.1f}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)
    ratio = statistics.median(traced) / statistics.median(bare)
    print(f"median bare {statistics.median(bare):,.0f} req/s, traced {statistics.median(traced):,.0f} req/s, "
          f"ratio {ratio:.2f} (side={args.side}, {args.connections} connections)")  # fmt: skip


if __name__ == "__main__":
    main()
