"""Service names from command lines: interpreters looked through, application servers to their app."""

from __future__ import annotations

import pytest

from probes.command_name import command_name

SHAPES = [
    (["python3", "-m", "orders"], "orders"),
    (["/usr/bin/python3.11", "-u", "-X", "dev", "app/orders.py", "--port", "80"], "orders"),
    (["python", "-mhttp.server", "8000"], "http.server"),
    (["/usr/bin/python3", "/usr/bin/gunicorn", "-w", "2", "-b", ":80", "shop.wsgi:application"], "shop"),
    (["gunicorn", "shop.wsgi"], "shop"),
    (["gunicorn", "--bind=0.0.0.0:80", "shop.wsgi"], "shop"),
    (["python3", "-m", "uvicorn", "main:app", "--port", "80"], "main"),
    (["celery", "-A", "proj", "worker", "-l", "info"], "proj"),
    (["flask", "--app", "hello", "run"], "hello"),
    (["java", "-Xmx1g", "-jar", "billing.jar"], "billing"),
    (["java", "-jar", "/srv/billing-1.4.2-SNAPSHOT.jar"], "billing"),
    (["java", "-cp", "lib/*", "com.acme.Billing"], "Billing"),
    (["java", "-m", "billing/com.acme.Main"], "billing"),
    (["node", "server.js"], "server"),
    (["node", "--inspect", "-r", "dotenv/config", "dist/api.mjs"], "api"),
    (["gunicorn"], "gunicorn"),  # an app server with no app named: itself (through python, its script)
    (["python3", "/usr/local/bin/gunicorn"], "gunicorn"),
]
NOTHING_BETTER = [
    ["python3", "-c", "import x"],
    ["python3"],
    ["python3", "-"],
    ["nginx", "-g", "daemon off;"],
    ["java", "-version"],
    ["node"],
    [],
]


@pytest.mark.parametrize(("argv", "name"), SHAPES, ids=[" ".join(a) for a, _ in SHAPES])
def test_a_command_line_names_its_program(argv: list[str], name: str) -> None:
    assert command_name(argv) == name


@pytest.mark.parametrize("argv", NOTHING_BETTER, ids=[" ".join(a) or "empty" for a in NOTHING_BETTER])
def test_a_command_line_with_nothing_better_than_the_process_name_gives_none(argv: list[str]) -> None:
    assert command_name(argv) == ""
