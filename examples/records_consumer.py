"""Print the exchanges l7scope publishes on the records topic (schema: docs/records.md).

    python examples/records_consumer.py --bootstrap 127.0.0.1:9092 [--topic l7scope.records] [--group G]

Each message is one protobuf `l7scope.v1.L7Record` (proto/records.proto), keyed by service name.
Delivery is at-least-once: after a pipeline restart a record may come again with the same record_id.
"""

from __future__ import annotations

import argparse

from kafka import KafkaConsumer

from pipeline.records_sink import BadRecord, decode_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topic", default="l7scope.records")
    parser.add_argument("--group", default=None, help="a consumer group (default: none, read everything)")
    parser.add_argument("--timeout-s", type=float, default=0, help="stop after this long without messages")
    args = parser.parse_args()
    consumer = KafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, auto_offset_reset="earliest",
        consumer_timeout_ms=int(args.timeout_s * 1000) or float("inf"),
    )  # fmt: skip
    seen: set[str] = set()  # drop duplicates a restarted pipeline may publish again
    for message in consumer:
        try:
            r = decode_record(message.value)
        except BadRecord as e:
            print(f"skipping offset {message.partition}/{message.offset}: {e}")
            continue
        if r.record_id in seen:
            continue
        seen.add(r.record_id)
        status = r.error_type or "ok"
        print(f"{message.key.decode():<12} {r.role.name.lower():<6} {r.protocol:<5} {r.name:<32} "
              f"{r.duration_s * 1000:8.2f} ms  {status:<6} {r.conn.client} -> {r.conn.server}")  # fmt: skip
    consumer.close()


if __name__ == "__main__":
    main()
