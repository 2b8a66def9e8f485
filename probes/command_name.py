"""A service name people recognise, from a process's command line (/proc/PID/cmdline).

`python -m orders` -> `orders`, `python app/orders.py` -> `orders`, `gunicorn shop.wsgi` -> `shop`,
`java -jar billing-1.4.jar` -> `billing`, `node server.js` -> `server`. Interpreters are looked through
to the program they run, and application servers (gunicorn, uvicorn, ...) to the application they
serve. "" when the command line names nothing better than the process itself (`python -c ...`, a
plain binary): the process name is the fallback (protocols.base.service_name).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_PYTHON = re.compile(r"^(?:python|pypy)[0-9.]*$")
_NODE = re.compile(r"^(?:node|nodejs)$")
_JAVA = "java"
# Python options that take a value (the next argument, or attached: -Wignore).
_PYTHON_VALUED = frozenset({"-W", "-X", "-Q"})
# Node options that take a value as the next argument.
_NODE_VALUED = frozenset({"-r", "--require", "--import", "--loader", "--experimental-loader"})
# Java options that take a value as the next argument.
_JAVA_VALUED = frozenset({"-cp", "-classpath", "--class-path", "-p", "--module-path", "--add-modules"})
# Application servers: the name is the application they load (`shop.wsgi:app` -> `shop`), found as the
# first argument that is not an option or an option's value.
_APP_SERVERS = frozenset({"gunicorn", "uvicorn", "hypercorn", "daphne", "waitress-serve", "celery", "flask"})
_APP_SERVER_VALUED = frozenset({
    "-b", "--bind", "-w", "--workers", "-k", "--worker-class", "-c", "--config", "--host", "--port",
    "--log-level", "-t", "--timeout", "-u", "--user", "-g", "--group", "--chdir", "--name", "-n",
    "--threads", "--uds", "--fd", "--root-path", "--env-file", "-l", "--loglevel", "-Q", "--queues",
    "--concurrency", "--pool", "--access-logfile", "--error-logfile", "--pid", "-p",
})  # fmt: skip
# A version at the end of a jar or script name: billing-1.4.2, api_2.0.0-SNAPSHOT.
_VERSION = re.compile(r"[-_]v?\d+(?:\.\d+)*(?:[-.][A-Za-z0-9]+)*$")
_SCRIPT_SUFFIXES = (".py", ".pyc", ".js", ".mjs", ".cjs", ".ts", ".jar")


def command_name(argv: Sequence[str]) -> str:
    """The service name a command line gives, or ""."""
    if not argv:
        return ""
    program, args = _base(argv[0]), list(argv[1:])
    if _PYTHON.match(program):
        program, args = _python_program(args)
    elif _NODE.match(program):
        program, args = _script_program(args, _NODE_VALUED)
    elif program == _JAVA:
        return _java_name(args)
    elif program not in _APP_SERVERS:
        return ""  # a binary: its process name says as much
    if program in _APP_SERVERS:
        return _app_name(args) or program
    return program


def _python_program(args: list[str]) -> tuple[str, list[str]]:
    """(the module or script a python command line runs, its arguments); ("", []) for -c or none."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m":
            return (args[i + 1], args[i + 2 :]) if i + 1 < len(args) else ("", [])
        if arg.startswith("-m") and len(arg) > 2:
            return arg[2:], args[i + 1 :]
        if arg == "-c" or arg.startswith("-c") or arg == "-":
            return "", []
        if arg in _PYTHON_VALUED:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return _script_name(arg), args[i + 1 :]
    return "", []


def _script_program(args: list[str], valued: frozenset[str]) -> tuple[str, list[str]]:
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in valued:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return _script_name(arg), args[i + 1 :]
    return "", []


def _java_name(args: list[str]) -> str:
    """`-jar billing-1.4.jar` -> `billing`; `-cp x com.acme.Billing` -> `Billing`; `-m mod/cls` -> `mod`."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-jar":
            return _script_name(args[i + 1]) if i + 1 < len(args) else ""
        if arg in ("-m", "--module"):
            return args[i + 1].split("/")[0] if i + 1 < len(args) else ""
        if arg in _JAVA_VALUED:
            i += 2
        elif arg.startswith("-"):
            i += 1
        else:
            return arg.rpartition(".")[2]
    return ""


def _app_name(args: list[str]) -> str:
    """The application an app server loads: `shop.wsgi:application` -> `shop`; `main:app` -> `main`."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-A", "--app"):  # celery -A proj worker, flask --app hello run
            return _module_root(args[i + 1]) if i + 1 < len(args) else ""
        if arg.startswith("--app="):
            return _module_root(arg[len("--app=") :])
        if arg in _APP_SERVER_VALUED:
            i += 2
        elif arg.startswith("-") or arg in ("run", "worker", "beat", "serve"):
            i += 1
        else:
            return _module_root(arg)
    return ""


def _module_root(target: str) -> str:
    return target.split(":")[0].split(".")[0]


def _script_name(path: str) -> str:
    """`app/orders.py` -> `orders`; `billing-1.4.jar` -> `billing`; `/usr/bin/gunicorn` -> `gunicorn`."""
    name = _base(path)
    for suffix in _SCRIPT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    return _VERSION.sub("", name) or name


def _base(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]
