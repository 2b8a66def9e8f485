"""A fast 64-byte ping-pong over loopback, as child processes (load for the loss-accounting tests).

server: python pingpong_peers.py server PORT       -> prints "ready"; echoes until the client leaves
client: python pingpong_peers.py client PORT SECS  -> ping-pongs for SECS seconds, prints the round trips
"""

from __future__ import annotations

import socket
import sys
import time

SIZE = 64


def serve(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("ready", flush=True)
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(SIZE):
                conn.sendall(data)


def client(port: int, seconds: float) -> None:
    msg = b"p" * SIZE
    n = 0
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            s.sendall(msg)
            got = 0
            while got < SIZE:
                got += len(s.recv(SIZE - got))
            n += 1
    print(n, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    else:
        client(int(sys.argv[2]), float(sys.argv[3]))
