"""A test application that logs its own call tree: HTTP services calling each other and MariaDB.

    python tests/support/call_tree_app.py NAME LOG [--asyncio] [--propagate] [--db PORT]
        [--call NAME=PORT ...] [--sql]

Each service serves `GET /NAME/<id>` on a free 127.0.0.1 port (printed on the first line of standard
output). For each request it makes its calls in order: `GET /<callee>/<new id>` to every `--call`
service, then, with `--sql`, `SELECT qty AS c_<new id> FROM stock WHERE id = 1` (an alias survives the
literal masking of db.query.text). After answering it appends one JSON line to LOG: its inbound path
and the calls it made (paths, SQL aliases, and with `--propagate` the traceparent it received and the
ones it sent). Ids are 16 letters a-p, unique per exchange: the log names each span by its path.

Thread-per-request by default (ThreadingHTTPServer, HTTP/1.1 keep-alive; one keep-alive connection per
callee and one MariaDB connection per serving thread); `--asyncio` serves from one event-loop thread
(several requests at once), opening a connection per call.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import random
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LETTERS = "abcdefghijklmnop"


def new_id() -> str:
    return "".join(random.choices(LETTERS, k=16))


def child_traceparent(inbound: str) -> str:
    """The same trace, a new parent span id (what an instrumented app would send)."""
    parts = inbound.split("-")
    return f"00-{parts[1]}-{secrets.token_hex(8)}-01" if len(parts) == 4 else ""


class Log:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._file.write(json.dumps(entry) + "\n")
            self._file.flush()


def threaded(args: argparse.Namespace, log: Log) -> None:
    local = threading.local()

    def http_call(name: str, port: int, path: str, traceparent: str) -> None:
        conns: dict[str, http.client.HTTPConnection] = local.__dict__.setdefault("http", {})
        conn = conns.get(name)
        if conn is None:
            conn = conns[name] = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"traceparent": traceparent} if traceparent else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        response.read()

    def sql_call(alias: str) -> None:
        import pymysql

        db = getattr(local, "db", None)
        if db is None:
            db = local.db = pymysql.connect(
                host="127.0.0.1", port=args.db, user="app", password="app", database="shop"
            )
        with db.cursor() as cursor:
            cursor.execute(f"SELECT qty AS {alias} FROM stock WHERE id = 1")
            cursor.fetchall()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            inbound = self.headers.get("traceparent", "")
            calls: list[dict[str, str]] = []
            for name, port in args.call:
                path, sent = f"/{name}/{new_id()}", child_traceparent(inbound) if args.propagate else ""
                http_call(name, port, path, sent)
                calls.append({"kind": "http", "path": path, "traceparent": sent})
            if args.sql:
                alias = f"c_{new_id()}"
                sql_call(alias)
                calls.append({"kind": "sql", "alias": alias})
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            log.write({"service": args.name, "path": self.path, "traceparent": inbound, "calls": calls})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


def event_loop(args: argparse.Namespace, log: Log) -> None:
    async def http_call(port: int, path: str, traceparent: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        extra = f"traceparent: {traceparent}\r\n" if traceparent else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        await writer.drain()
        await reader.read()  # to the close
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            lines = head.decode().split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            inbound = headers.get("traceparent", "")
            await asyncio.sleep(0.005)  # requests overlap on the one thread
            calls: list[dict[str, str]] = []
            for name, port in args.call:
                call_path = f"/{name}/{new_id()}"
                sent = child_traceparent(inbound) if args.propagate else ""
                await http_call(port, call_path, sent)
                calls.append({"kind": "http", "path": call_path, "traceparent": sent})
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            log.write({"service": args.name, "path": path, "traceparent": inbound, "calls": calls})
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("name")
    parser.add_argument("log")
    parser.add_argument("--asyncio", action="store_true")
    parser.add_argument("--propagate", action="store_true")
    parser.add_argument("--sql", action="store_true")
    parser.add_argument("--db", type=int, default=0)
    parser.add_argument(
        "--call", action="append", default=[], type=lambda s: (s.split("=")[0], int(s.split("=")[1]))
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    (event_loop if arguments.asyncio else threaded)(arguments, Log(arguments.log))
