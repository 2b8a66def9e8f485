"""A real single-node Apache Kafka (KRaft) broker for tests: jars from Maven Central, run as a child JVM.

`ensure_jars()` fetches the broker's runtime jars once into a cache outside the repo; `start_broker()`
formats a fresh log directory and starts `kafka.Kafka` on 127.0.0.1, returning a `Broker` that can be
stopped, paused (SIGSTOP) or restarted on the same directories and ports.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.0"  # passed to the pom as -Dkafka.version, so this is the one place to change
POM_DIR = Path(__file__).resolve().parent / "kafka"
JAVA = os.environ.get("L7SCOPE_JAVA", shutil.which("java") or "/usr/bin/java")
READY_TIMEOUT_S = 60.0

LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


class BrokerError(RuntimeError):
    """The broker could not be fetched, formatted or started; the message says what to look at."""


def default_cache_dir() -> Path:
    env = os.environ.get("L7SCOPE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "l7scope"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Two test sessions fetching at once must not interleave their copies.
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_jars(cache_dir: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """Return `<cache>/kafka-<version>/libs`, running Maven to fill it the first time."""
    cache = (cache_dir or default_cache_dir()).resolve()
    home = cache / f"kafka-{version}"
    libs = home / "libs"
    marker = home / ".complete"
    if marker.exists():
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("mvn not found: install maven (apt-get install maven) to fetch the Kafka jars")
    with _file_lock(cache / f"kafka-{version}.lock"):
        if marker.exists():
            return libs
        staging = Path(tempfile.mkdtemp(prefix=f"kafka-{version}-", dir=cache))
        cmd = [
            mvn, "-B", "-q",
            "-f", str(POM_DIR / "pom.xml"),
            f"-Dmaven.repo.local={cache / 'm2'}",
            f"-Dkafka.version={version}",
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging / 'libs'}",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0 or not any((staging / "libs").glob(f"kafka_2.13-{version}.jar")):
            shutil.rmtree(staging, ignore_errors=True)
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BrokerError(f"mvn could not fetch Kafka {version} jars (exit {proc.returncode}):\n{tail}")
        shutil.rmtree(home, ignore_errors=True)
        staging.rename(home)
        marker.write_text(f"kafka {version}\n")
    return libs


def server_properties(node_id: int, port: int, controller_port: int, log_dir: Path) -> str:
    """A single-node KRaft config, combined broker+controller, listening on loopback only."""
    props = {
        "node.id": node_id,
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"{node_id}@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": 4,
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 4,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        "group.initial.rebalance.delay.ms": 0,
        "log.flush.interval.messages": 10000,
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding. One starting with "-"
    # would be read as an option by the storage tool, so draw again (Kafka's own generator does too).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


def kafka_reachable(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a kafka-python admin client can connect and list topics."""
    from kafka.admin import KafkaAdminClient

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except Exception:
        return False
    try:
        admin.list_topics()
        return True
    except Exception:
        return False
    finally:
        with contextlib.suppress(Exception):
            admin.close()


@dataclass(slots=True)
class Broker:
    """A running broker child process and the directories it owns."""

    port: int
    controller_port: int
    work_dir: Path
    libs: Path
    heap: str = "512m"
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0
    _log_fh: object = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            JAVA, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-Xshare:auto", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.work_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.work_dir / 'logs'}",
            "-cp", f"{self.libs}/*", main, *args,
        ]  # fmt: skip

    def format_storage(self) -> None:
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "--config", str(self.config_path),
            "--cluster-id", _new_cluster_id(),
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"kafka StorageTool format failed (exit {proc.returncode}):\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )

    def launch(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start the JVM on the already formatted directories and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError(f"broker already running as pid {self.proc.pid}")
        log = self.log_path.open("ab")
        self._log_fh = log
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", str(self.config_path)),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.work_dir, start_new_session=True,
        )  # fmt: skip
        self.starts += 1
        self.paused = False
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise BrokerError(
                    f"Kafka broker exited (code {code}) before it was ready; log tail:\n{self.log_tail()}"
                )
            if kafka_reachable(self.bootstrap, timeout_s=2.0):
                return
            time.sleep(0.3)
        self.stop()
        raise BrokerError(
            f"Kafka broker on {self.bootstrap} not ready after {timeout_s:.0f}s; "
            f"log tail ({self.log_path}):\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """Terminate by PID (SIGTERM for a clean shutdown, SIGKILL if it lingers) and reap it."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.paused = False
        self.proc = None
        if self._log_fh is not None:
            self._log_fh.close()  # type: ignore[attr-defined]
            self._log_fh = None

    def kill(self) -> None:
        """Crash the broker (SIGKILL, no clean shutdown), e.g. to test recovery."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.stop()

    def pause(self) -> None:
        """Freeze the broker (SIGSTOP): connections stay open but nothing answers."""
        if self.proc is None or self.proc.poll() is not None:
            raise BrokerError("broker is not running")
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.paused:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.paused = False

    def restart(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Stop and start again on the same log dirs and ports: topics and offsets survive."""
        self.stop()
        self.launch(timeout_s)


def start_broker(
    port: int | None = None,
    work_dir: Path | None = None,
    *,
    libs: Path | None = None,
    heap: str = "512m",
    timeout_s: float = READY_TIMEOUT_S,
) -> Broker:
    """Format a fresh KRaft log dir under `work_dir` and start a broker on 127.0.0.1:`port`."""
    libs = libs or ensure_jars()
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="l7scope-kafka-"))
    work.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    controller_port = free_port()
    while controller_port == port:
        controller_port = free_port()
    (work / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
    (work / "logs").mkdir(exist_ok=True)
    broker = Broker(port=port, controller_port=controller_port, work_dir=work, libs=libs, heap=heap)
    broker.config_path.write_text(server_properties(1, port, controller_port, work / "data"))
    broker.format_storage()
    broker.launch(timeout_s)
    return broker


def create_topic(bootstrap: str, name: str, partitions: int = 4, *, timeout_s: float = 30.0) -> None:
    """Create `name` with `partitions` partitions (replication 1) and wait until every one has a leader."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1}},
                timeout_ms=int(timeout_s * 1000),
                wait_for_metadata=True,
            )
    finally:
        admin.close()


def consumer_settings() -> dict[str, int]:
    """Timeouts that keep group rebalances in tests to a few seconds."""
    return {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}
