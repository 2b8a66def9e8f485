"""Python `ssl` peers run as child processes (the test process itself is excluded from capture).

server: python tls_peers.py server CERT KEY PORT  -> answers each "PING n\n" line with "PONG n\n"
client: python tls_peers.py client PORT N [DELAY] -> after DELAY s, sends N pings on one connection
"""

from __future__ import annotations

import socket
import ssl
import sys
import time


def serve(cert: str, key: str, port: int) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("ready", flush=True)
        while True:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls, tls.makefile("rwb") as f:
                    for line in f:
                        f.write(line.replace(b"PING", b"PONG"))
                        f.flush()
            except (OSError, ssl.SSLError):
                conn.close()  # a readiness probe or a client that went away


def client(port: int, n: int, delay: float = 0.0) -> None:
    time.sleep(delay)  # lets a test see the exec (and this process's libssl) before any traffic
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw) as tls:
        for i in range(n):
            tls.sendall(f"PING {i}\n".encode())
            reply = b""
            while not reply.endswith(b"\n"):
                reply += tls.recv(100)
            sys.stdout.write(reply.decode())


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 0.0)
