"""What the agent costs the traced application: wrk against nginx on loopback, bare and with the agent,
interleaved rounds in one run.

  python -m bench.capture_overhead                                  # saturation, `l7scope run --no-table`
  python -m bench.capture_overhead --modes run,agent                # ... and `l7scope agent` -> Kafka
  python -m bench.capture_overhead --rate 10000 --modes agent       # fixed offered rate: agent CPU %
  python -m bench.capture_overhead --variant old:/tmp/l7-before --variant new:.   # two checkouts, interleaved

Modes: `run` is capture + embedded queue + pipeline (parses both sides) in one process; `agent` is
capture + protobuf batches published to a real Kafka broker (tests/support/kafka_broker.py, started
once, on the same machine). Per traced run it prints the kernel's lost events, the embedded queue's
dropped fragments, events drained/s, records parsed/s and the agent's CPU (all threads) over the wrk
window. A fixed rate is held by a wrk Lua `delay()` per request: connections * 1000 / rate ms minus
the response latency measured in a bare calibration run, dithered so fractional milliseconds average
out. The achieved rate is reported, never assumed. nginx: one worker, keep-alive, sendfile off,
`GET /ok` -> "hello\\n". Run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import nginx  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
# wrk calls delay() before each request of a connection (whole ms): dither to hold a fractional mean.
RATE_LUA = """local mean = {ms:.4f}
local base = math.floor(mean)
function delay()
  if math.random() < mean - base then return base + 1 end
  return base
end
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds per thread of a process (utime + stime of /proc/PID/task/TID/stat)."""
    out: dict[int, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def load1() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wrk(port: int, seconds: float, connections: int, script: Path | None) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{round(seconds)}s", f"http://127.0.0.1:{port}/ok"]
    if script:
        cmd[1:1] = ["-s", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    return float(m.group(1))


@dataclass
class Variant:
    """One way of running the agent: a checkout (for before/after) and extra environment."""

    name: str
    root: Path
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Variant:
        name, _, rest = spec.partition(":")
        root, _, envs = rest.partition(":")
        pairs = dict(kv.split("=", 1) for kv in envs.split(",") if kv)
        return cls(name, Path(root or ROOT).resolve(), pairs)


class Agent:
    """`l7scope run --no-table` or `l7scope agent` as a child; its JSON log lines are kept."""

    def __init__(self, mode: str, variant: Variant, env: dict[str, str]) -> None:
        args = ["agent"] if mode == "agent" else ["run", "--no-table"]
        self.proc = subprocess.Popen([sys.executable, "-m", "l7scope.cli", *args], env={**env, **variant.env},
                                     cwd=variant.root, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True)  # fmt: skip
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)  # never let a full pipe block it
        self._reader.start()
        if not self._ready.wait(90):
            self.stop()
            raise RuntimeError("the agent did not start:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "capturing" in line:
                self._ready.set()
        self._ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)

    def summary(self) -> dict[str, object]:
        """Fields of the stop lines ("drain stopped", "pipeline stopped", "agent stopped")."""
        out: dict[str, object] = {}
        for line in self.lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            msg = str(entry.get("msg", ""))
            if msg.startswith(("drain stopped", "pipeline stopped")):
                out.update({k: v for k, v in entry.items() if k not in ("ts", "level", "logger", "msg")})
            elif msg.startswith("agent stopped"):  # its losses are the Kafka publisher's drops
                out["kafka_dropped"] = sum(
                    int(entry.get(k, 0)) for k in ("dropped_batches", "dropped_fragments")
                )
        return out


@dataclass
class Sample:
    rps: float
    cpu_pct: float
    cpu_per_10k: float
    counters: dict[str, object]
    seconds: float

    def rate(self, key: str) -> float | None:
        value = self.counters.get(key)
        return value / self.seconds if isinstance(value, int | float) and value >= 0 else None


def traced_round(port: int, args: argparse.Namespace, script: Path | None, mode: str, variant: Variant,
                 env: dict[str, str], broker_pid: int | None = None) -> Sample:  # fmt: skip
    agent = Agent(mode, variant, env)
    broker_pid = broker_pid if mode == "agent" else None  # the broker only works in agent mode
    try:
        time.sleep(1.0)
        threads, before, t0 = thread_cpu(agent.proc.pid), cpu_seconds(agent.proc.pid), time.monotonic()
        broker_before = cpu_seconds(broker_pid) if broker_pid else 0.0
        rps = wrk(port, args.seconds, args.connections, script)
        used, wall = cpu_seconds(agent.proc.pid) - before, time.monotonic() - t0
        broker_used = cpu_seconds(broker_pid) - broker_before if broker_pid else None
        after = thread_cpu(agent.proc.pid)
        per_thread = sorted((v - threads.get(t, 0.0) for t, v in after.items()), reverse=True)
    finally:
        agent.stop()
    counters = {**agent.summary(), "busiest_threads_pct": [round(100 * v / wall) for v in per_thread[:3]]}
    if broker_used is not None:  # the Kafka broker shares the 2 cores here; in production it runs elsewhere
        counters["broker_cpu_pct"] = round(100 * broker_used / wall)
    return Sample(rps, 100 * used / wall, used / (rps * args.seconds) * 10_000, counters, args.seconds)


def describe(s: Sample) -> str:
    c = s.counters

    def per_s(key: str) -> str:
        r = s.rate(key)
        return "n/a" if r is None else f"{r / 1000:.1f}k/s"

    return (f"{s.rps:8.0f} req/s  CPU {s.cpu_pct:5.1f}% ({s.cpu_per_10k:.3f} s/10k req)  drained "
            f"{per_s('drained_events')}  records {per_s('records')}  kernel lost "
            f"{c.get('kernel_lost_events', 'n/a')}  queue dropped {c.get('queue_dropped_fragments', 'n/a')} "
            f"frags  kafka dropped "
            f"{c.get('kafka_dropped', 'n/a')}  reader {c.get('ring_reader', 'n/a')}  threads % "
            f"{c['busiest_threads_pct']}"
            + (f"  broker CPU {c['broker_cpu_pct']}%" if "broker_cpu_pct" in c else ""))  # fmt: skip


def calibrate(port: int, args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The Lua delay that makes bare nginx run at --rate: the target period minus measured latency."""
    period = 1000 * args.connections / args.rate
    delay, script = period, work / "rate.lua"
    for _ in range(3):
        script.write_text(RATE_LUA.format(ms=max(0.0, delay)))
        achieved = wrk(port, 3, args.connections, script)
        latency = 1000 * args.connections / achieved - delay
        delay = period - latency
    script.write_text(RATE_LUA.format(ms=max(0.0, delay)))
    print(f"rate {args.rate}/s over {args.connections} connections: period {period:.3f} ms, "
          f"delay {delay:.3f} ms (latency {latency:.3f} ms)", flush=True)  # fmt: skip
    return script, delay


def med(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--rate", type=int, default=0, help="offered req/s (0: saturation)")
    p.add_argument("--modes", default="run", help="comma-separated: run (embedded), agent (-> Kafka)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:ROOT[:K=V,...]",
                   help="a checkout to run the agent from, plus env (repeat to interleave)")  # fmt: skip
    args = p.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    variants = [Variant.parse(v) for v in args.variant] or [Variant("this", ROOT)]

    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="l7bench-") as tmp:
        work = Path(tmp)
        port = stack.enter_context(nginx(work / "nginx"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "L7SCOPE_"))}
        cache = os.environ.get("L7SCOPE_CACHE", "/var/cache/l7scope")
        env["L7SCOPE_CAPTURE_HEADER_CACHE"] = cache + "/headers"
        broker_pid = None
        if "agent" in modes:
            from tests.support.kafka_broker import start_broker

            broker = start_broker(work_dir=work / "kafka")
            stack.callback(broker.stop)
            env["L7SCOPE_KAFKA_BOOTSTRAP"] = broker.bootstrap
            broker_pid = broker.pid
            print(f"Kafka broker at {broker.bootstrap} (pid {broker.pid})", flush=True)
        script = calibrate(port, args, work)[0] if args.rate else None
        wrk(port, 2, args.connections, script)  # warm-up
        bare: list[float] = []
        loads: list[float] = []
        traced: dict[tuple[str, str], list[Sample]] = {(m, v.name): [] for m in modes for v in variants}
        for r in range(args.rounds):
            loads.append(load1())
            bare.append(wrk(port, args.seconds, args.connections, script))
            print(f"round {r + 1} (load {loads[-1]:.2f}): bare {bare[-1]:8.0f} req/s", flush=True)
            order = list(traced) if r % 2 == 0 else list(reversed(traced))  # interleave: no order bias
            for mode, name in order:
                variant = next(v for v in variants if v.name == name)
                sample = traced_round(port, args, script, mode, variant, env, broker_pid)
                traced[(mode, name)].append(sample)
                ratio = sample.rps / bare[-1]
                print(f"  {mode:5} {name:8} {describe(sample)}  ratio {ratio:.2f}", flush=True)

    what = f"fixed {args.rate} req/s offered" if args.rate else "saturation"
    print(f"\n{what}, {args.rounds} rounds x {args.seconds:.0f} s, {args.connections} connections, "
          f"load average {min(loads):.2f}..{max(loads):.2f}")  # fmt: skip
    print(f"bare req/s median {statistics.median(bare):.0f} (min {min(bare):.0f}, max {max(bare):.0f})")
    for (mode, name), samples in traced.items():
        ratios = [s.rps / b for s, b in zip(samples, bare, strict=True)]
        rps = [s.rps for s in samples]
        lost = [s.counters.get("kernel_lost_events") for s in samples]
        dropped = [s.counters.get("queue_dropped_fragments", s.counters.get("kafka_dropped"))
                   for s in samples]  # fmt: skip
        records = [r for s in samples if (r := s.rate("records")) is not None]
        drained = [r for s in samples if (r := s.rate("drained_events")) is not None]
        print(f"{mode:5} {name:8} req/s {statistics.median(rps):.0f} ({min(rps):.0f}..{max(rps):.0f})  "
              f"ratio {med(ratios)}  CPU % of a core {med([s.cpu_pct for s in samples])}  "
              f"CPU s/10k req {med([s.cpu_per_10k for s in samples])}")  # fmt: skip
        broker = [b for s in samples if isinstance(b := s.counters.get("broker_cpu_pct"), int)]
        print(f"{'':14} drained/s {med(drained)}  records/s {med(records)}  kernel lost {lost}  "
              f"dropped (queue or Kafka) {dropped}"
              + (f"  broker CPU % {med([float(b) for b in broker])}" if broker else ""))  # fmt: skip


if __name__ == "__main__":
    main()
