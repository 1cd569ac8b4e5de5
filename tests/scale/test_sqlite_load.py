"""The embedded default under load: two processes with 25 writer threads each navigate one
terminal on a SQLite file through the real service, with the settings' WAL, IMMEDIATE
transactions and busy timeout. No writer may see "database is locked", and every
navigation that reported success is in the database: the versions handed out are exactly
1..N without a gap or a repeat, and the terminal's version is N."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.scale.conftest import ROOT, base_environment, django_python

PROCESSES = 2
THREADS_PER_PROCESS = 25

# Each writer process: its threads start together, navigate until the deadline, and
# report every version they were handed and every error they met.
_WRITERS = """
import json, sys, threading, time
import django
django.setup()
from django.db import connection
from gallery.models import Terminal
from gallery.services import terminal_navigate

seconds, threads = float(sys.argv[1]), int(sys.argv[2])
versions, errors = [], []
lock = threading.Lock()
start = threading.Barrier(threads)

def write():
    terminal = Terminal.objects.select_related("owner").get(slug="load")
    start.wait()
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                moved = terminal_navigate(
                    terminal_id=terminal.pk, user=terminal.owner, action="next"
                )
            except Exception as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
            else:
                with lock:
                    versions.append(moved.version)
    finally:
        connection.close()

workers = [threading.Thread(target=write) for _ in range(threads)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
print(json.dumps({"versions": versions, "errors": errors}))
"""

_MAKE_TERMINAL = """
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", interactive=False, verbosity=0)
from gallery.models import Image, Terminal
owner = get_user_model().objects.create_user("load-owner", password="a-long-test-password")
terminal = Terminal.objects.create(slug="load", name="Load", owner=owner, is_public=True)
for n in range(3):
    Image.objects.create(
        owner=owner, terminal=terminal, prompt=f"picture {n}", provider="local",
        status=Image.Status.READY, progress=100,
    )
result = terminal.version
"""


def run_writers(tmp_path: Path, seconds: float) -> tuple[int, list[int], list[str], int]:
    env = base_environment(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{tmp_path / 'load.sqlite3'}",
        MEDIA_ROOT=str(tmp_path / "media"),
    )
    initial: int = django_python(_MAKE_TERMINAL, env=env)

    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITERS, str(seconds), str(THREADS_PER_PROCESS)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    versions: list[int] = []
    errors: list[str] = []
    for writer in writers:
        out, err = writer.communicate(timeout=seconds + 120)
        assert writer.returncode == 0, err[-4000:]
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        versions += report["versions"]
        errors += report["errors"]

    final: int = django_python(
        "from gallery.models import Terminal\nresult = Terminal.objects.get(slug='load').version",
        env=env,
    )
    return initial, versions, errors, final


def assert_every_write_present(
    initial: int, versions: list[int], errors: list[str], final: int
) -> None:
    assert errors == [], f"{len(errors)} failed writes, first: {errors[:3]}"
    assert versions, "no navigation succeeded"
    assert final == initial + len(versions)
    assert sorted(versions) == list(range(initial + 1, final + 1))


@pytest.mark.slow
def test_fifty_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    assert_every_write_present(*run_writers(tmp_path, seconds=5))


@pytest.mark.faults
def test_fifty_writers_for_a_minute_lose_nothing(tmp_path: Path) -> None:
    assert_every_write_present(*run_writers(tmp_path, seconds=60))
