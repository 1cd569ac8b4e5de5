"""A small deployment for scale tests: a fresh PostgreSQL database, one Redis database,
two Daphne processes and one task worker, configured by environment variables only,
exactly as docs/deploy.md runs them.

The servers and worker are real processes; tests talk to them over HTTP and websockets
and prepare data with `Cluster.python`, which runs code in a fresh process against the
same database and Redis.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import live
from tests.live import ROOT, base_environment, django_python, free_port, migrate

__all__ = ["ROOT", "base_environment", "django_python", "free_port", "http", "migrate"]

# The admin of these servers; overridable for machines that keep them elsewhere.
POSTGRES_ADMIN_URL = os.environ.get(
    "SCALE_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_SERVER_URL = os.environ.get("SCALE_REDIS_URL", "redis://127.0.0.1:6379")
# Redis databases this suite may claim; 0 is left to developers.
REDIS_DATABASES = range(1, 16)
REDIS_CLAIM_KEY = "artterminal-scale-test-claim"


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
        return live.logs(sorted(self.workdir.glob("*.log")), chars=3000)


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

    cluster = Cluster(env=env, ports=[], workdir=workdir)
    try:
        for name in ("daphne-A", "daphne-B"):
            # Each process reaches the built-in engine it serves itself (PORT).
            process, port = live.start_daphne(env=env, log=workdir / f"{name}.log")
            cluster.processes.append(process)
            cluster.ports.append(port)
        worker = [
            *("manage.py", "db_worker", "--queue-name", "*", "--interval", "0.2"),
            *("--no-reload", "--no-startup-delay"),
        ]
        cluster.processes.append(live.start_process(worker, env=env, log=workdir / "db_worker.log"))
        for index in range(len(cluster.ports)):
            login = cluster.http_url(index, "/accounts/login/")
            # Any HTTP answer means Daphne and Django are up.
            live.wait_until(
                live.answering(login),
                cluster.processes,
                logs=cluster.logs,
            )
        yield cluster
    finally:
        live.stop(cluster.processes)
