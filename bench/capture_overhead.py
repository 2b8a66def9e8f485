"""What the agent costs the traced application: wrk against nginx on loopback, with and without
`l7scope run --no-table` (or `l7scope agent` publishing to Kafka), interleaved rounds in one run.

  python -m bench.capture_overhead                       # saturation: req/s ratio, agent CPU s per 10k req
  python -m bench.capture_overhead --rate 10000          # fixed rate (wrk + a Lua delay): agent CPU %
  python -m bench.capture_overhead --rate 10000 --kafka  # the same, `l7scope agent` -> a local broker

nginx: one worker, keep-alive, sendfile off, `GET /ok` -> "hello\\n". Run as root.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import nginx  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# wrk calls delay() before each request on a connection: connections / delay = the offered rate.
RATE_LUA = "function delay() return {ms} end\n"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wrk(port: int, seconds: float, connections: int, script: Path | None) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", f"http://127.0.0.1:{port}/ok"]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(m.group(1))


def start_agent(env: dict[str, str], kafka: bool) -> subprocess.Popen[str]:
    args = ["agent"] if kafka else ["run", "--no-table"]
    proc = subprocess.Popen([sys.executable, "-m", "l7scope.cli", *args], env=env, cwd=ROOT,
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        if "capturing" in line:
            return proc
    proc.kill()
    raise RuntimeError("the agent did not start")


def stop_agent(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rate", type=int, default=0, help="offered req/s (0: saturation)")
    p.add_argument("--kafka", action="store_true", help="agent mode, publishing to a local test broker")
    args = p.parse_args()

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="l7bench-") as tmp:
        work = Path(tmp)
        port = stack.enter_context(nginx(work / "nginx"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
        cache = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope")
        env["L7SCOPE_CAPTURE_HEADER_CACHE"] = cache + "/headers"
        if args.kafka:
            from tests.support.kafka_broker import start_broker

            broker = start_broker(work_dir=work / "kafka")
            stack.callback(broker.stop)
            env["L7SCOPE_KAFKA_BOOTSTRAP"] = broker.bootstrap
        script = None
        if args.rate:
            script = work / "rate.lua"
            script.write_text(RATE_LUA.format(ms=max(1, round(1000 * args.connections / args.rate))))
        wrk(port, 2, args.connections, script)  # warm-up
        bare, traced, cpu_per_10k, cpu_pct = [], [], [], []
        for r in range(args.rounds):
            bare.append(wrk(port, args.seconds, args.connections, script))
            agent = start_agent(env, args.kafka)
            try:
                time.sleep(1.0)
                before, t0 = cpu_seconds(agent.pid), time.monotonic()
                rps = wrk(port, args.seconds, args.connections, script)
                used, wall = cpu_seconds(agent.pid) - before, time.monotonic() - t0
            finally:
                stop_agent(agent)
            traced.append(rps)
            cpu_per_10k.append(used / (rps * args.seconds) * 10_000)
            cpu_pct.append(100 * used / wall)
            print(f"round {r + 1}: bare {bare[-1]:8.0f} req/s  agent {rps:8.0f} req/s  ratio "
                  f"{rps / bare[-1]:.2f}  agent CPU {cpu_pct[-1]:5.1f}% of a core, "
                  f"{cpu_per_10k[-1]:.3f} s per 10k req", flush=True)  # fmt: skip
    ratios = [t / b for t, b in zip(traced, bare, strict=True)]
    mode = f"fixed {args.rate} req/s" if args.rate else "saturation"
    print(f"\n{mode}, {'agent -> Kafka' if args.kafka else 'run (embedded)'}, {args.rounds} rounds of"
          f" {args.seconds:.0f} s, {args.connections} connections")
    rows = (("bare  req/s", bare, ".0f"), ("agent req/s", traced, ".0f"), ("ratio", ratios, ".2f"))
    for name, values, f in rows:
        med, lo, hi = statistics.median(values), min(values), max(values)
        print(f"{name:12} median {med:{f}} (min {lo:{f}}, max {hi:{f}})")
    print(f"agent CPU median {statistics.median(cpu_pct):.1f}% of one core (min {min(cpu_pct):.1f}, max "
          f"{max(cpu_pct):.1f}); {statistics.median(cpu_per_10k):.3f} CPU s per 10k requests")


if __name__ == "__main__":
    main()
