"""A small deployment for scale tests: a fresh PostgreSQL database, one Redis database,
two Daphne processes and one task worker, configured by environment variables only,
exactly as docs/deploy.md runs them.

The servers and worker are real processes; tests talk to them over HTTP and websockets
and prepare data with `Cluster.python`, which runs code in a fresh process against the
same database and Redis.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The admin of these servers; overridable for machines that keep them elsewhere.
POSTGRES_ADMIN_URL = os.environ.get(
    "SCALE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER_URL = os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379")
# Redis databases this suite may claim; 0 is left to developers.
REDIS_DATABASES = range(1, 16)
REDIS_CLAIM_KEY = "artterminal-scale-test-claim"
STARTUP_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _postgres_url_for(database: str) -> str:
    base, _, _ = POSTGRES_ADMIN_URL.rpartition("/")
    return f"{base}/{database}"


def _postgres_admin() -> Any:
    import psycopg

    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)


def _postgres_unreachable() -> str:
    try:
        with _postgres_admin():
            return ""
    except Exception as error:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable ({error.__class__.__name__})"


def _redis_unreachable() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_SERVER_URL, socket_connect_timeout=3).ping()
    except Exception as error:
        return f"Redis at {REDIS_SERVER_URL} is not reachable ({error.__class__.__name__})"
    return ""


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, uniquely named PostgreSQL database, dropped afterwards; its URL."""
    reason = _postgres_unreachable()
    if reason:
        pytest.skip(reason)
    name = f"artterminal_scale_{secrets.token_hex(6)}"
    with _postgres_admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _postgres_url_for(name)
    finally:
        with _postgres_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_database() -> Iterator[str]:
    """An empty Redis database claimed for this run (never one another run holds),
    flushed before and after; its URL."""
    reason = _redis_unreachable()
    if reason:
        pytest.skip(reason)
    import redis

    claim = secrets.token_hex(8)
    for number in REDIS_DATABASES:
        url = f"{REDIS_SERVER_URL}/{number}"
        client = redis.Redis.from_url(url)
        if client.set(REDIS_CLAIM_KEY, claim, nx=True, ex=3600) and client.dbsize() == 1:
            break
        if client.get(REDIS_CLAIM_KEY) == claim.encode():
            client.delete(REDIS_CLAIM_KEY)  # claimed a database someone else is using
    else:
        pytest.skip("Every Redis database from 1 to 15 is in use")
    client.flushdb()
    client.set(REDIS_CLAIM_KEY, claim, ex=3600)  # the flush must not free the claim
    try:
        yield url
    finally:
        client.flushdb()


def base_environment(**settings: str) -> dict[str, str]:
    """A child process's environment: the system's basics, none of the developer's
    settings, plus `settings`."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        SECRET_KEY=secrets.token_urlsafe(60),
        LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env


def django_python(code: str, *, env: dict[str, str], timeout: float = 120) -> Any:
    """Run `code` in a fresh Django process with `env`. The code assigns its answer to
    `result`, which comes back through JSON."""
    program = (
        "import json, django\ndjango.setup()\nresult = None\n"
        f"{code}\n"
        "print('\\n@@result@@' + json.dumps(result))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", program],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if finished.returncode != 0:
        raise AssertionError(f"Django code failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.rpartition("@@result@@")[2])


def migrate(env: dict[str, str]) -> None:
    finished = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr


@dataclass
class Cluster:
    """Two Daphne processes and a task worker sharing PostgreSQL and Redis."""

    env: dict[str, str]
    ports: list[int]
    workdir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def http_url(self, index: int, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"

    def ws_url(self, index: int, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def origin(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def python(self, code: str, *, timeout: float = 120) -> Any:
        """Run `code` in a fresh Django process against the cluster's database and Redis."""
        return django_python(code, env=self.env, timeout=timeout)

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.workdir.glob("*.log"))
        )


def http(
    url: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes]:
    """Status and body of a request to a cluster process (loopback http only)."""
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(  # noqa: S310
        url, data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _start(cluster: Cluster, name: str, args: list[str], **extra: str) -> None:
    log = (cluster.workdir / f"{name}.log").open("wb")
    cluster.processes.append(
        subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env={**cluster.env, **extra},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    )


def _wait_until_serving(cluster: Cluster) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    for index in range(len(cluster.ports)):
        while True:
            if any(process.poll() is not None for process in cluster.processes):
                raise AssertionError(f"A cluster process exited at startup:\n{cluster.logs()}")
            try:
                http(cluster.http_url(index, "/accounts/login/"), timeout=5)
                break  # any HTTP answer means Daphne and Django are up
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(f"Daphne did not answer:\n{cluster.logs()}") from None
                time.sleep(0.2)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def cluster(
    postgres_database: str, redis_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Migrated database, two Daphne processes (A = 0, B = 1) and one db_worker, all
    answering before the first test runs; everything stopped afterwards."""
    workdir = tmp_path_factory.mktemp("cluster")
    env = base_environment(
        DEBUG="true",
        DATABASE_URL=postgres_database,
        REDIS_URL=redis_database,
        MEDIA_ROOT=str(workdir / "media"),
        ENGINE_API_KEY="sk-engine-" + secrets.token_urlsafe(24),
        IMAGE_SIZE="256",
        WEB_CONCURRENCY="2",
    )
    migrate(env)

    cluster = Cluster(env=env, ports=[free_port(), free_port()], workdir=workdir)
    try:
        for index, port in enumerate(cluster.ports):
            _start(
                cluster,
                f"daphne-{'AB'[index]}",
                [
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "artterminal.asgi:application",
                ],
                # Each process reaches the built-in engine it serves itself.
                PORT=str(port),
            )
        _start(
            cluster,
            "db_worker",
            [
                "manage.py",
                "db_worker",
                "--queue-name",
                "*",
                "--interval",
                "0.2",
                "--no-reload",
                "--no-startup-delay",
            ],
        )
        _wait_until_serving(cluster)
        yield cluster
    finally:
        _stop(cluster.processes)
