"""sendmmsg/recvmmsg over TCP through libc (Python's socket module has neither), as child processes.

server: python mmsg_peers.py server PORT VLEN SIZE -> prints "ready"; accepts one connection, waits for
        the client's bytes, reads them with one recvmmsg of VLEN buffers of SIZE bytes, prints the count
client: python mmsg_peers.py client PORT MSGS      -> one sendmmsg of MSGS messages, two iovecs each
"""

from __future__ import annotations

import ctypes
import socket
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(Iovec)), ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t), ("msg_flags", ctypes.c_int),
    ]  # fmt: skip


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


def message(i: int) -> tuple[bytes, bytes]:
    return f"msg {i} head|".encode(), f"body {i}\n".encode()


def build(parts: list[list[bytes | int]]) -> tuple[ctypes.Array[Mmsghdr], list[object]]:
    """An mmsghdr array; each part is bytes (to send) or a size (a receive buffer)."""
    keep: list[object] = []
    vec = (Mmsghdr * len(parts))()
    for m, iovs in enumerate(parts):
        arr = (Iovec * len(iovs))()
        for j, part in enumerate(iovs):
            buf = ctypes.create_string_buffer(part, len(part)) if isinstance(part, bytes) else (
                ctypes.create_string_buffer(part))  # fmt: skip
            keep.append(buf)
            arr[j] = Iovec(
                ctypes.cast(buf, ctypes.c_void_p), len(buf.raw) if isinstance(part, int) else len(part)
            )
        keep.append(arr)
        vec[m].msg_hdr.msg_iov = arr
        vec[m].msg_hdr.msg_iovlen = len(iovs)
    return vec, keep


def client(port: int, msgs: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        vec, _keep = build([list(message(i)) for i in range(msgs)])
        sent = libc.sendmmsg(s.fileno(), vec, msgs, 0)
        assert sent == msgs, ctypes.get_errno()
        s.shutdown(socket.SHUT_WR)
        s.recv(10)


def server(port: int, vlen: int, size: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as listener:
        print("ready", flush=True)
        conn, _ = listener.accept()
        time.sleep(0.3)  # every byte is queued before the single recvmmsg
        vec, _keep = build([[size] for _ in range(vlen)])
        got = libc.recvmmsg(conn.fileno(), vec, vlen, 0, None)
        print(got, sum(vec[i].msg_len for i in range(max(got, 0))), flush=True)
        conn.sendall(b"ok")
        conn.close()


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        client(int(sys.argv[2]), int(sys.argv[3]))
