"""Deployments to break: real Daphne processes, and a Redis server of the suite's own
that can be killed and restarted (never the machine's shared one).

Two shapes, both configured by environment variables only, as docs/deploy.md runs them:
- the default: one Daphne on a SQLite file with the in-memory channel layer;
- the scaled one: two Daphne processes on a fresh PostgreSQL database (the scale suite's
  `postgres_database` fixture) and the suite's own Redis.
Each Daphne writes its output to a log file the tests read back for tracebacks.
"""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import live
from tests.live import RedisServer, base_environment, django_python, free_port, migrate
from tests.scale.conftest import postgres_database

__all__ = ["Daphnes", "postgres_database"]

# What a healthy server never prints, whatever its clients do.
SERVER_FAILURE = re.compile(r"Traceback|\bERROR\b|\bCRITICAL\b")


@dataclass
class Daphnes:
    """Daphne processes on fixed ports; each can be SIGKILLed and restarted on its port."""

    env: dict[str, str]
    workdir: Path
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[int, int] = field(default_factory=dict)

    def ws_url(self, index: int, path: str) -> str:
        return f"ws://127.0.0.1:{self.ports[index]}{path}"

    def origin(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def python(self, code: str, *, timeout: float = 120) -> Any:
        return django_python(code, env=self.env, timeout=timeout)

    def start(self, index: int) -> None:
        """Start Daphne `index` on its port (again, after a kill) and wait until it answers."""
        self.starts[index] = self.starts.get(index, 0) + 1
        log = self.workdir / f"daphne-{index}.{self.starts[index]}.log"
        self.processes[index], _ = live.start_daphne(env=self.env, log=log, port=self.ports[index])
        self.wait_serving(index)

    def wait_serving(self, index: int) -> None:
        url = f"http://127.0.0.1:{self.ports[index]}/accounts/login/"
        live.wait_until(live.answering(url), [self.processes[index]], logs=self.logs)

    def kill(self, index: int) -> None:
        """SIGKILL: no shutdown handlers, no close frames, sockets simply drop."""
        live.kill(self.processes[index])

    def stop(self) -> None:
        live.stop(self.processes.values())

    def logs(self) -> str:
        return live.logs(sorted(self.workdir.glob("daphne-*.log")))

    def failures(self) -> list[str]:
        """Log lines that mean a server failed: a traceback or an error."""
        return [
            line
            for log in sorted(self.workdir.glob("daphne-*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if SERVER_FAILURE.search(line)
        ]


def _daphnes(workdir: Path, count: int, **settings: str) -> Daphnes:
    env = base_environment(
        DEBUG="true",
        MEDIA_ROOT=str(workdir / "media"),
        ENGINE_API_KEY="sk-engine-" + secrets.token_urlsafe(24),
        WEB_CONCURRENCY=str(count),
        **settings,
    )
    migrate(env)
    return Daphnes(env=env, workdir=workdir, ports=[free_port() for _ in range(count)])


@pytest.fixture
def make_daphnes(tmp_path: Path) -> Iterator[Callable[..., Daphnes]]:
    """Build (migrated, not yet started) Daphne processes; all stopped afterwards."""
    made: list[Daphnes] = []

    def make(count: int, **settings: str) -> Daphnes:
        workdir = tmp_path / f"site-{len(made)}"
        workdir.mkdir()
        made.append(_daphnes(workdir, count, **settings))
        return made[-1]

    yield make
    for daphnes in made:
        daphnes.stop()


@pytest.fixture
def sqlite_daphne(make_daphnes: Callable[..., Daphnes], tmp_path: Path) -> Daphnes:
    """The default deployment: one Daphne, a SQLite file, the in-memory channel layer."""
    daphnes = make_daphnes(1, DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}")
    daphnes.start(0)
    return daphnes


@pytest.fixture
def redis_daphnes(
    make_daphnes: Callable[..., Daphnes], postgres_database: str, own_redis: RedisServer
) -> Daphnes:
    """The scaled deployment: two Daphne processes on PostgreSQL and the suite's Redis."""
    daphnes = make_daphnes(2, DATABASE_URL=postgres_database, REDIS_URL=own_redis.url)
    for index in range(2):
        daphnes.start(index)
    return daphnes
