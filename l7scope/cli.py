"""The `l7scope` command. Errors a user can hit end in one line that says what to do."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from l7scope.config import Config, ConfigError, load
from l7scope.logs import setup_logging
from l7scope.redact import redact

if TYPE_CHECKING:
    from probes.capture import Capture
    from probes.health import Health
    from probes.pcap import PcapReader

EXAMPLES = """examples:
  l7scope run                                  capture this machine, live table in the terminal
  l7scope run --export jsonl:-                 one JSON object per exchange on standard output
  OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 l7scope run    spans to an OTLP collector
  l7scope agent                                capture -> Kafka (L7SCOPE_KAFKA_BOOTSTRAP=host:9092)
  l7scope pipeline                             Kafka -> spans/records (run several: a consumer group)
  l7scope pipeline --group reparse-1 --from-time 2025-01-31T12:00:00Z   re-parse history from then
  l7scope replay capture.pcap --export jsonl:-  parse a capture file with the same pipeline
  l7scope doctor                               check privileges, kernel, BTF, tracefs, bcc, ring buffer
  l7scope doctor --kafka                       ... and that the configured Kafka answers
  l7scope top                                  live per-endpoint RED view (keys: r rate, e errors, l latency)
  l7scope top --kafka                          the same from the records topic of a running pipeline
  l7scope run --map-out map.svg                write the service map (.svg, .dot, .json) at exit
  l7scope map --from records.jsonl -o map.svg  draw the service map of a JSON-lines records file
  l7scope alerts check rules.yaml              validate an alert rules file (one line per problem)
  l7scope alerts evaluate --rules rules.yaml --kafka kafka:9092 --alertmanager http://am:9093
                                               alert rules over whole services, from the records topic
                                               (`pipeline` leaves export.alert_rules to it when it
                                               writes that topic)

exit codes: 0 ok, 1 runtime failure, 2 usage/config/environment problem, 3 unreachable dependency
  (Kafka, OTLP), 4 not stopped within 4 s of SIGINT/SIGTERM/--duration (forced; logs where it was
  stuck). Logs are JSON lines when stderr is not a terminal.
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="l7scope",
        description="eBPF L7 APM: HTTP/1.1, HTTP/2, gRPC, MySQL and Redis exchanges from every TCP "
        "connection.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="TOML configuration file (see deploy/config.example.toml)")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging of l7scope (libraries stay at warnings)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="capture and pipeline in one process (the embedded default)")
    _add_export(run)
    run.add_argument("--duration", type=_seconds, help="stop after this many seconds")
    run.add_argument("--no-table", action="store_true", help="do not print the live table")
    run.add_argument("--map-out", metavar="FILE", help="write the service map at exit (.svg, .dot, .json)")
    run.add_argument(
        "--demo", action="store_true", help="also start a demo HTTP service and client on 127.0.0.1"
    )

    agent = sub.add_parser("agent", help="capture and publish fragments to Kafka")
    agent.add_argument("--duration", type=_seconds, help="stop after this many seconds")

    pipe = sub.add_parser(
        "pipeline",
        help="consume fragments from Kafka and export records",
        description="One member of the pipeline consumer group. Alert rules (export.alert_rules) are "
        "not evaluated here while records go to the records topic (export.records_topic auto/on): a "
        "replica sees only its partitions, so run `l7scope alerts evaluate` on that topic instead. "
        "With export.records_topic = off they are evaluated in this replica, over its partitions only.",
    )
    _add_export(pipe)
    pipe.add_argument("--group", help="consumer group (default from config: l7scope-pipeline)")
    start = pipe.add_mutually_exclusive_group()
    start.add_argument(
        "--from-latest", action="store_true", help="a new group starts at the end, not the start"
    )
    start.add_argument(
        "--from-beginning", action="store_true", help="a new group re-parses all history (the default)"
    )
    start.add_argument(
        "--from-time",
        metavar="T",
        help="a new group starts at time T (ISO-8601, e.g. 2025-01-31T12:00:00Z, or epoch seconds)",
    )
    pipe.add_argument("--duration", type=_seconds, help="stop after this many seconds")

    replay = sub.add_parser("replay", help="parse a pcap/pcapng file through the same pipeline")
    replay.add_argument("file")
    _add_export(replay)

    doctor = sub.add_parser("doctor", help="check what capture needs; a pass/fail table with fixes")
    doctor.add_argument("--kafka", action="store_true", help="also check the configured Kafka")

    top = sub.add_parser("top", help="live per-endpoint RED view in the terminal (r/e/l sort, q quits)")
    top.add_argument("--kafka", action="store_true", help="read the records topic instead of capturing")

    service_map = sub.add_parser("map", help="draw the service map from a JSON-lines records file")
    service_map.add_argument("--from", dest="source", required=True, metavar="JSONL_FILE",
                             help="records as `--export jsonl:FILE` writes them")  # fmt: skip
    service_map.add_argument("--format", choices=("dot", "json", "svg"), help="default: from -o, else dot")
    service_map.add_argument("-o", "--output", metavar="FILE", help="default: standard output")

    alerts = sub.add_parser(
        "alerts", help="alert rules: `alerts check RULES` validates a file, `alerts evaluate` runs them"
    )
    alerts_sub = alerts.add_subparsers(dest="alerts_command", required=True)
    alerts_sub.add_parser("check", help="validate a YAML rules file").add_argument("rules")
    evaluate = alerts_sub.add_parser(
        "evaluate",
        help="evaluate alert rules on the records topic (whole services; for scaled-out pipelines)",
        description="Consume the records topic (keyed by service) as one consumer group and evaluate "
        "the rules over whole services, in record time. `l7scope pipeline` does not evaluate "
        "export.alert_rules while its records go to that topic: run this instead (one process, or "
        "several in one group: each evaluates the services of its partitions). A rebalance or "
        "restart starts the windows empty: an alert may take one window to fire again.",
    )
    evaluate.add_argument("--rules", metavar="FILE", help="YAML rules file (default: export.alert_rules)")
    evaluate.add_argument("--kafka", metavar="BROKERS", help="host:port[,...] (default: kafka.bootstrap)")
    evaluate.add_argument(
        "--alertmanager", metavar="URL", help="base URL (default: export.alertmanager_url; '' for none)"
    )
    evaluate.add_argument(
        "--group", default="l7scope-alerts", help="consumer group (default: l7scope-alerts)"
    )
    evaluate.add_argument(
        "--lateness",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="how late a record may arrive and still be in the window when it is evaluated (default 10)",
    )
    evaluate.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="prometheus:HOST:PORT",
        help="serve its counters (late records, failed notifications) on /metrics",
    )
    evaluate.add_argument("--duration", type=_seconds, help="stop after this many seconds")

    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = load(args.config, os.environ)
        config = _apply_flags(config, args).validate()
        if args.command == "replay":  # the input first: a file that is no capture needs no output
            _check_capture_file(args.file)
        if args.command in WRITES_OUTPUTS:  # before capture starts, not at the first record or at exit
            from l7scope.outputs import check_outputs

            check_outputs(config)
        return COMMANDS[args.command](config, args)
    except ConfigError as e:
        return _fail(f"configuration: {e}")
    except _Unavailable as e:
        return _fail(str(e), e.exit_code)
    except Exception:  # a bug or a runtime failure: logged with its traceback (one JSON line off a TTY)
        logging.getLogger("l7scope").exception("l7scope %s failed", args.command)
        return EXIT_FAILURE
    finally:
        from l7scope.stopping import command_returned

        command_returned()


# Commands that write records, a service map or /metrics: their targets are checked up front.
WRITES_OUTPUTS = ("run", "pipeline", "replay", "top")


def _seconds(text: str) -> float:
    """argparse type of --duration: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: use a positive number of seconds, e.g. 30")
    return value


def _add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--export",
        action="append",
        default=[],
        metavar="KIND[:ARG]",
        help="jsonl:PATH (- for stdout), prometheus:HOST:PORT (/metrics, /map.svg); OTLP: OTEL_EXPORTER_*",
    )


def _apply_flags(config: Config, args: argparse.Namespace) -> Config:
    export = config.export
    for spec in getattr(args, "export", []):
        kind, _, arg = spec.partition(":")
        if kind == "prometheus" and arg:  # e.g. prometheus:127.0.0.1:9464
            export = dataclasses.replace(export, prometheus=arg)
            continue
        if kind != "jsonl" or not arg:
            raise ConfigError(
                f"--export {spec}: use jsonl:PATH (- for standard output) or prometheus:HOST:PORT"
            )
        export = dataclasses.replace(export, jsonl=arg)
    if getattr(args, "map_out", None):
        export = dataclasses.replace(export, map_out=args.map_out)
    if getattr(args, "no_table", False) or export.jsonl == "-":
        export = dataclasses.replace(export, live_table=False)
    return dataclasses.replace(config, export=export)


# Exit codes (documented in --help and docs/troubleshooting.md).
EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class _Unavailable(Exception):
    """Something outside l7scope is missing; the message says what to do."""

    exit_code = EXIT_USAGE


class _Unreachable(_Unavailable):
    """A configured dependency (Kafka, an OTLP collector) does not answer."""

    exit_code = EXIT_UNREACHABLE


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"l7scope: {redact(message)}", file=sys.stderr)  # a secret in a value is not echoed
    return code


def _stop_event(duration: float | None) -> threading.Event:
    """Set by SIGINT/SIGTERM or after `duration`; the process exits EXIT_STUCK if it has not stopped
    within l7scope.stopping.GRACE_S of that (whatever a parser or exporter is doing)."""
    from l7scope.stopping import install

    return install(duration)


def export_ports(config: Config, env: Mapping[str, str], with_kafka: bool) -> tuple[int, ...]:
    """Ports l7scope sends its own output to. The receiving end (a collector, Alertmanager, the broker)
    is another process, so excluding our pid does not hide those connections: traced, every export
    would come back as an exchange to export again. A URL without an explicit port is left alone
    rather than excluding all of port 80 or 443."""
    from urllib.parse import urlsplit

    from pipeline.otlp import OtlpEndpoint

    addresses = config.kafka.bootstrap.split(",") if with_kafka else []
    for kind, on in (("traces", config.export.otlp), ("metrics", config.export.otlp_metrics)):
        endpoint = OtlpEndpoint.from_env(env, kind) if on else None
        if endpoint is not None:
            addresses.append(urlsplit(endpoint.url).netloc)
    if config.export.alert_rules and config.export.alertmanager_url:
        addresses.append(urlsplit(config.export.alertmanager_url).netloc)
    ports = {address.rpartition(":")[2] for address in addresses}
    return tuple(sorted(int(p) for p in ports if p.isdigit()))


def _capture(config: Config, with_kafka: bool = False) -> Capture:
    """Load the eBPF programs; our own traffic (and what receives our output) is filtered in the kernel."""
    from probes.capture import Capture, CaptureOptions
    from probes.errors import CaptureUnavailable

    options = CaptureOptions(
        copy_chunk=config.capture.copy_chunk,
        ring_bytes=config.capture.ring_mib << 20,
        exclude_pids=(os.getpid(), *config.capture.exclude_pids),
        exclude_ports=(*config.capture.exclude_ports, *export_ports(config, os.environ, with_kafka)),
        node=config.node,
        header_cache=Path(config.capture.header_cache),
        tls=config.capture.tls,
        go_tls=config.capture.go_tls,
        go_tls_max_executables=config.capture.go_tls_max_executables,
        go_tls_max_uprobes=config.capture.go_tls_max_uprobes,
        only_pids=config.capture.only_pids,
        only_processes=config.capture.only_processes,
        only_ports=config.capture.only_ports,
        only_cgroups=config.capture.only_cgroups,
        services=config.capture.services,
    )
    try:
        return Capture(options)
    except CaptureUnavailable as e:
        raise _Unavailable(str(e)) from None
    except ValueError as e:  # a cgroup that does not exist
        raise ConfigError(f"capture.only_cgroups: {e}") from None


def _kafka_errors(action: Callable[[], object], config: Config) -> None:
    from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    try:
        action()
    except (KafkaConnectionError, KafkaTimeoutError):
        raise _Unreachable(
            f"cannot reach Kafka at {config.kafka.bootstrap}: start the broker or set L7SCOPE_KAFKA_BOOTSTRAP"
        ) from None
    except KafkaError as e:
        raise _Unavailable(f"Kafka at {config.kafka.bootstrap} failed: {e}") from None


def cmd_run(config: Config, args: argparse.Namespace) -> int:
    from l7scope.demo import start_demo, stop_demo
    from pipeline.run import run_embedded

    capture = _capture(config)  # before the demo starts, so its first requests are seen
    demo = start_demo() if args.demo else []
    try:
        health = run_embedded(config, os.environ, capture, _stop_event(args.duration))
    finally:
        stop_demo(demo)
    return 0 if health.total("export_failed") == 0 else 1


def cmd_agent(config: Config, args: argparse.Namespace) -> int:
    from pipeline.run import run_agent

    capture, stop = _capture(config, with_kafka=True), _stop_event(args.duration)
    _kafka_errors(lambda: run_agent(config, capture, stop), config)
    return 0


def cmd_pipeline(config: Config, args: argparse.Namespace) -> int:
    from pipeline.run import run_pipeline

    if args.from_time is not None:
        from probes.kafka_io import StartAt

        try:
            StartAt.parse_time(args.from_time)
        except ValueError as e:
            raise ConfigError(f"--from-time: {e}: use e.g. 2025-01-31T12:00:00Z or 1738324800") from None
    from l7scope.doctor import brokers_unreachable

    problem = brokers_unreachable(config.kafka)  # fail in seconds, not after the client's long timeout
    if problem is not None:
        raise _Unreachable(f"cannot reach Kafka: {problem}: start the broker or set L7SCOPE_KAFKA_BOOTSTRAP")
    stop = _stop_event(args.duration)
    _kafka_errors(
        lambda: run_pipeline(
            config,
            os.environ,
            stop,
            group=args.group,
            from_beginning=not args.from_latest,
            start_at=args.from_time,
        ),
        config,
    )
    return 0


def _check_capture_file(path: str) -> None:
    """Before an exporter creates a file or opens a port: exit 2 when `path` cannot be replayed."""
    from probes.pcap import CaptureFileError, check_capture

    try:
        check_capture(path)
    except CaptureFileError as e:
        raise _Unavailable(str(e)) from None


def cmd_replay(config: Config, args: argparse.Namespace) -> int:
    """Exit 0 when every packet of the file was read; 1 when the file is damaged or has packets of an
    unsupported link type (what came before the damage is still exported, a warning line says where),
    or an exporter failed; 2 when the file cannot be replayed at all (checked before anything starts)."""
    from l7scope.progress import ProgressBar
    from pipeline.run import run_replay
    from probes.health import Health
    from probes.pcap import CaptureFileError, PcapReader

    health = Health()
    bar = ProgressBar(sys.stderr)  # draws only on a terminal; the summary line below is always printed
    reader = PcapReader(args.file, progress=bar if bar.enabled else None, health=health)
    stop = _stop_event(None)  # Ctrl-C ends the read early, with the summary
    try:
        run_replay(reader, config, os.environ, health, stop=stop)
    except CaptureFileError as e:  # the file changed between the check and the read
        raise _Unavailable(str(e)) from None
    finally:
        bar.close()
    for line in replay_summary(args.file, reader, health):
        print(f"l7scope: {line}", file=sys.stderr)
    incomplete = reader.damage is not None or reader.stats.unsupported_packets
    return EXIT_FAILURE if incomplete or health.total("export_failed") else EXIT_OK


def replay_summary(path: str, reader: PcapReader, health: Health) -> list[str]:
    """The lines `replay` ends with: where the file was damaged (if it was), then the totals."""
    lines = []
    stats, damage, exchanges = reader.stats, reader.damage, health.total("exchanges")
    if damage is not None:
        unread = reader.size - damage.offset
        lines.append(
            f"warning: {path}: {damage.reason} at byte {damage.offset} ({damage.detail}): "
            f"{_n(stats.packets, 'packet')} ({_n(stats.connections, 'connection')}, "
            f"{_n(exchanges, 'exchange')}) read before it, the last {_n(unread, 'byte')} not"
        )
    summary = f"{exchanges} exchanges, {health.total('parse_errors')} parse errors"
    if stats.unsupported_packets:
        types = ", ".join(str(t) for t in sorted(reader.unsupported))
        summary += f", {_n(stats.unsupported_packets, 'packet')} not read (unsupported link type {types})"
    if damage is not None:
        summary += f", capture file damaged ({damage.reason} at byte {damage.offset})"
    return [*lines, summary]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    from l7scope.doctor import exit_code, render, run_checks

    results = run_checks(config, os.environ, kafka=args.kafka)
    render(results, sys.stdout)
    return exit_code(results)


def cmd_top(config: Config, args: argparse.Namespace) -> int:
    from l7scope.top import embedded_feed, kafka_feed, run_top

    if not sys.stdout.isatty():
        raise _Unavailable("top needs a terminal: run it in one (or use `l7scope run --export jsonl:-`)")
    config = dataclasses.replace(config, export=dataclasses.replace(config.export, live_table=False))
    stop = _stop_event(None)
    if args.kafka:
        feeds: list[Callable[..., None]] = []
        _kafka_errors(lambda: feeds.append(kafka_feed(config)), config)
        return run_top(feeds[0], stop)
    return run_top(embedded_feed(config, os.environ, _capture(config)), stop)


def cmd_map(config: Config, args: argparse.Namespace) -> int:
    from pipeline.topology import Topology, format_for, read_jsonl_records, render

    try:
        topology = Topology.from_records(read_jsonl_records(args.source))
    except OSError as e:
        raise _Unavailable(f"cannot read {args.source} ({e.strerror}): name a JSON-lines file") from None
    except (ValueError, KeyError, TypeError) as e:
        raise _Unavailable(
            f"{args.source} is not a records file ({type(e).__name__}: {e}): write one with --export jsonl:F"
        ) from None
    fmt = args.format or (format_for(args.output, "dot") if args.output else "dot")
    text = render(topology.snapshot(), fmt)
    if args.output:
        from l7scope.config import file_mode
        from l7scope.outputs import write_private

        try:
            write_private(args.output, text, file_mode(config.export.file_mode))
        except OSError as e:
            raise _Unavailable(f"cannot write {args.output} ({e.strerror}): choose another path") from None
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_alerts(config: Config, args: argparse.Namespace) -> int:
    if args.alerts_command == "evaluate":
        return cmd_alerts_evaluate(config, args)
    from pipeline.alert_rules import check_rules, load_rules

    try:
        Path(args.rules).read_bytes().decode("utf-8")
    except OSError as e:
        raise _Unavailable(f"cannot read {args.rules} ({e.strerror}): name a YAML rules file") from None
    except UnicodeDecodeError as e:
        raise _Unavailable(
            f"{args.rules} is not a text file (byte {e.start} is not UTF-8): name a YAML rules file"
        ) from None
    errors = check_rules(args.rules)
    for error in errors:
        print(f"{args.rules}: {error}", file=sys.stderr)
    if errors:
        return EXIT_FAILURE
    print(f"{args.rules}: {len(load_rules(args.rules).rules)} rules OK")
    return EXIT_OK


def cmd_alerts_evaluate(config: Config, args: argparse.Namespace) -> int:
    """Alert rules over the records topic: exit 2 on a bad rules file, 3 when Kafka does not answer."""
    from pipeline.alert_rules import load_rules

    for spec in args.export:
        if not spec.startswith("prometheus:"):
            raise ConfigError(
                f"alerts evaluate --export {spec}: it writes no records: use prometheus:HOST:PORT"
            )
    rules = args.rules or config.export.alert_rules
    if not rules:
        raise ConfigError("alerts evaluate: no rules: give --rules FILE or set export.alert_rules")
    if not Path(rules).is_file():
        raise _Unavailable(f"cannot read {rules}: name a YAML rules file (--rules)")
    load_rules(rules)  # every problem now, before joining the group (RulesError: exit 2)
    if args.kafka:
        config = dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap=args.kafka))
    url = config.export.alertmanager_url if args.alertmanager is None else args.alertmanager
    if config.export.prometheus:  # its own counters on /metrics: the address is checked up front
        from l7scope.outputs import check_prometheus

        check_prometheus(config.export.prometheus)
    from l7scope.doctor import brokers_unreachable

    problem = brokers_unreachable(config.kafka)
    if problem is not None:
        raise _Unreachable(f"cannot reach Kafka: {problem}: start the broker or give --kafka HOST:PORT")
    from pipeline.alerts_source import run_alert_evaluator

    stop = _stop_event(args.duration)
    _kafka_errors(
        lambda: run_alert_evaluator(
            config, os.environ, stop, rules, url, group=args.group, lateness_s=args.lateness
        ),
        config,
    )
    return EXIT_OK


COMMANDS: dict[str, Callable[[Config, argparse.Namespace], int]] = {
    "run": cmd_run,
    "agent": cmd_agent,
    "pipeline": cmd_pipeline,
    "replay": cmd_replay,
    "doctor": cmd_doctor,
    "top": cmd_top,
    "map": cmd_map,
    "alerts": cmd_alerts,
}

if __name__ == "__main__":
    sys.exit(main())
