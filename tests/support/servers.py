"""Real servers for tests, on 127.0.0.1, started as children and stopped by PID."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tests.support.kafka_broker import free_port

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile {sendfile};
    keepalive_requests 100000;
    {http_extra}
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        {listen}
        root {dir}/www;
        location = /ok {{ return 200 "hello\\n"; }}
        location = /submit {{ return 201 "created\\n"; }}
        location / {{ }}
    }}
}}
"""


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start_nginx(
    work_dir: Path,
    port: int | None = None,
    *,
    sendfile: bool = False,
    tls: bool = False,
    http_extra: str = "",
    binary: str = "/usr/sbin/nginx",
) -> tuple[subprocess.Popen[bytes], int]:
    """nginx in the foreground (one process) serving /ok, /submit and www/; the caller stops it by PID."""
    port = port or free_port()
    (work_dir / "www").mkdir(parents=True, exist_ok=True)
    listen = f"listen 127.0.0.1:{port};"
    if tls:
        cert, key = self_signed_cert(work_dir)
        listen = (
            f"listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; "
            "ssl_protocols TLSv1.2 TLSv1.3;"
        )
    conf = work_dir / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            dir=work_dir, listen=listen, sendfile="on" if sendfile else "off", http_extra=http_extra
        )
    )
    proc = subprocess.Popen([binary, "-p", str(work_dir), "-c", str(conf)], stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
    except TimeoutError:
        proc.kill()
        proc.wait(timeout=10)
        raise
    return proc, port


@contextlib.contextmanager
def nginx(work_dir: Path, port: int | None = None, **options: Any) -> Iterator[int]:
    """`start_nginx` for a with-block (options as there); yields the port, kills nginx by PID after."""
    proc, port = start_nginx(work_dir, port, **options)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def self_signed_cert(work_dir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for CN=127.0.0.1 (made with `openssl req`); returns (cert, key)."""
    cert, key = work_dir / "cert.pem", work_dir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def nginx_https(work_dir: Path, port: int | None = None) -> contextlib.AbstractContextManager[int]:
    """`nginx` with TLS (TLSv1.2 and 1.3, a self-signed certificate in work_dir); yields the port."""
    work_dir.mkdir(parents=True, exist_ok=True)
    return nginx(work_dir, port, tls=True)


def curl_keepalive_three(port: int, scheme: str = "http") -> None:
    """200, 404 and a POST on one keep-alive connection (curl reuses it across --next)."""
    base = f"{scheme}://127.0.0.1:{port}"
    subprocess.run(
        [
            "curl",
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            f"{base}/ok",
            "-o",
            "/dev/null",
            f"{base}/missing",
            "--next",
            "-sS",
            "-k",
            "-o",
            "/dev/null",
            "-d",
            "item=1",
            f"{base}/submit",
        ],
        check=True,
        timeout=20,
    )


def app_user(password: str, database: str = "shop", grant: str = "*.*") -> list[str]:
    """SQL making `database` and a user `app` with `password` (for both '%' and 'localhost')."""
    statements = [f"CREATE DATABASE {database}"]
    for host in ("%", "localhost"):  # 'localhost' beats '%' (anonymous users)
        statements += [
            f"CREATE USER 'app'@'{host}' IDENTIFIED BY '{password}'",
            f"GRANT ALL ON {grant} TO 'app'@'{host}'",
        ]
    return statements


def terminate(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def mariadb(data: Path, setup: Sequence[str] = ()) -> Iterator[int]:
    """MariaDB in `data` on a free 127.0.0.1 port, `setup` run as root over its socket; yields the port."""
    import pymysql

    data.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={data}",
         "--auth-root-authentication-method=normal"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port, sock = free_port(), str(data / "s")
    proc = subprocess.Popen(
        ["mariadbd", "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={sock}",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-log-bin", "--max-allowed-packet=64M"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=30)
        admin = pymysql.connect(unix_socket=sock, user="root")
        with admin.cursor() as c:
            for statement in setup:
                c.execute(statement)
        admin.commit()
        admin.close()
        yield port
    finally:
        terminate(proc, timeout_s=20)


PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_HBA = """local all all trust
host all md5user 127.0.0.1/32 md5
host all all 127.0.0.1/32 scram-sha-256
"""


@contextlib.contextmanager
def postgres(setup: Sequence[str] = (), tls: bool = False) -> Iterator[tuple[int, Path]]:
    """PostgreSQL 15 on a free 127.0.0.1 port, run as the `postgres` OS user (it refuses root) in a temp
    dir it owns; `setup` run as the superuser over the unix socket. Yields (port, socket dir). Users with
    passwords authenticate over TCP with SCRAM-SHA-256, the user `md5user` with md5. `tls`: SSLRequest
    is accepted (a self-signed certificate), else refused."""
    import shutil
    import signal
    import tempfile

    import psycopg

    base = Path(tempfile.mkdtemp(prefix="l7scope-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    shutil.chown(base, "postgres", "postgres")
    shutil.chown(sock, "postgres", "postgres")
    proc: subprocess.Popen[Any] | None = None
    try:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
             "-U", "postgres", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        (data / "pg_hba.conf").write_text(PG_HBA)
        ssl = ["-c", "ssl=off"]
        if tls:
            cert, key = self_signed_cert(base)
            for path in (cert, key):
                shutil.chown(path, "postgres", "postgres")
            key.chmod(0o600)
            ssl = ["-c", "ssl=on", "-c", f"ssl_cert_file={cert}", "-c", f"ssl_key_file={key}"]
        port = free_port()
        proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
             "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=50", *ssl],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(port, timeout=30)
        admin = {"host": str(sock), "port": port, "user": "postgres", "dbname": "postgres"}
        deadline = time.monotonic() + 30
        while True:  # listening comes before accepting: "the database system is starting up"
            try:
                psycopg.connect(**admin, connect_timeout=5).close()  # type: ignore[arg-type]
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        with psycopg.connect(**admin, autocommit=True) as c:  # type: ignore[arg-type]
            for statement in setup:
                c.execute(statement.encode())
        yield port, sock
    finally:
        if proc is not None:
            pid_file = data / "postmaster.pid"
            with contextlib.suppress(OSError, ValueError, IndexError):
                postmaster = int(pid_file.read_text().split()[0])
                if postmaster > 0:
                    import os

                    os.kill(postmaster, signal.SIGINT)  # fast shutdown; runuser then exits
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)


def pg_users(password: str, database: str = "shop") -> list[str]:
    """SQL making `database`, a SCRAM user `app` and an md5 user `md5user`, both with `password`."""
    return [
        f"CREATE DATABASE {database}",
        "SET password_encryption = 'scram-sha-256'",
        f"CREATE USER app PASSWORD '{password}' SUPERUSER",
        "SET password_encryption = 'md5'",
        f"CREATE USER md5user PASSWORD '{password}' SUPERUSER",
    ]


@contextlib.contextmanager
def redis(work_dir: Path, port: int | None = None) -> Iterator[int]:
    """redis-server on 127.0.0.1 (no persistence, files in work_dir) in the foreground; yields the port,
    stops it by PID."""
    port = port or free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--daemonize", "no", "--dir", str(work_dir), "--logfile", str(work_dir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield port
    finally:
        terminate(proc)
