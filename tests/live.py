"""Running the site as production does, for tests: real Daphne processes on loopback ports.

The shared pieces of every live-site fixture (browser, engine, scale and fault suites):
free ports or a bound socket handed to Daphne, a child environment that never inherits a
developer's settings, migrating, starting and waiting until a server answers, stopping
or killing it, running Django code in a fresh process, and reading back the logs.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STARTUP_SECONDS = 60.0
ASGI_APP = "artterminal.asgi:application"
# What a child may take from the test run's own environment: only the system's basics.
_SYSTEM_BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def free_port() -> int:
    """A loopback port nobody holds right now (another process may take it before use;
    `start_daphne` without a port avoids that race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def base_environment(**settings: str) -> dict[str, str]:
    """A child process's environment: the system's basics, none of the developer's
    settings (nor their .env), plus `settings`. Upstream services are off unless
    `settings` name them."""
    env = {key: value for key, value in os.environ.items() if key in _SYSTEM_BASICS}
    env.update(
        PYTHONUNBUFFERED="1",
        ENV_FILE="",
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        SECRET_KEY=secrets.token_urlsafe(60),
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        OPENAI_API_KEY="",
        REALTIME_BASE_URL="",
        REDIS_URL="",
    )
    env.update(settings)
    return env


def sqlite_environment(root: Path, **settings: str) -> dict[str, str]:
    """The default deployment in `root`: a SQLite file, its media folder, the in-memory
    channel layer and an engine key of its own."""
    return base_environment(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{root / 'site.sqlite3'}",
        MEDIA_ROOT=str(root / "media"),
        ENGINE_API_KEY="sk-engine-" + secrets.token_urlsafe(24),
        **settings,
    )


def migrate(env: dict[str, str]) -> None:
    finished = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{finished.stderr[-4000:]}")


def django_python(code: str, *, env: dict[str, str], spec: Any = None, timeout: float = 120) -> Any:
    """Run `code` in a fresh Django process with `env`. The code reads `spec` (any JSON)
    and assigns its answer to `result`, which comes back through JSON."""
    program = (
        "import json, sys, django\ndjango.setup()\n"
        "spec = json.loads(sys.argv[1])\nresult = None\n"
        f"{code}\n"
        "print('\\n@@result@@' + json.dumps(result))\n"
    )
    finished = subprocess.run(
        [sys.executable, "-c", program, json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if finished.returncode != 0:
        raise AssertionError(f"Django code failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.rpartition("@@result@@")[2])


def start_process(
    args: list[str], *, env: dict[str, str], log: Path, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    """`python <args>` in the repository, its output appended to `log`. Its own session,
    so a signal meant for the test run never reaches it half-way."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,
        )


def start_daphne(
    *, env: dict[str, str], log: Path, port: int | None = None, options: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], int]:
    """Daphne serving the site, with `options` (as --proxy-headers); the process and its
    port. Without `port` the socket is bound here and handed over by file descriptor, so
    no other process can take the port in between; with one (a restart on the same
    port) Daphne binds it itself."""
    if port is not None:
        args = ["-m", "daphne", *options, "-b", "127.0.0.1", "-p", str(port), ASGI_APP]
        return start_process(args, env={**env, "PORT": str(port)}, log=log), port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        bound: int = listener.getsockname()[1]
        fd = listener.fileno()
        args = ["-m", "daphne", *options, "--fd", str(fd), ASGI_APP]
        process = start_process(args, env={**env, "PORT": str(bound)}, log=log, pass_fds=(fd,))
    return process, bound


def http_status(
    url: str, *, method: str = "GET", data: bytes | None = None, timeout: float = 5
) -> int | None:
    """The HTTP status a loopback server answers with, or None when nothing answers."""
    assert url.startswith("http://127.0.0.1:"), url
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:  # noqa: S310
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ConnectionError, TimeoutError):
        return None


def answering(
    url: str,
    *,
    status: int | None = None,
    method: str = "GET",
    data: bytes | None = None,
    timeout: float = 5,
) -> Callable[[], bool]:
    """A readiness check: `url` gives any HTTP answer, or `status` when that is given."""

    def check() -> bool:
        got = http_status(url, method=method, data=data, timeout=timeout)
        return got is not None if status is None else got == status

    return check


def wait_until(
    ready: Callable[[], bool],
    processes: Iterable[subprocess.Popen[bytes]],
    *,
    logs: Callable[[], str],
    seconds: float = STARTUP_SECONDS,
) -> None:
    """Poll `ready` until it holds; fail with the logs if a process exits or time runs out."""
    watched = list(processes)
    deadline = time.monotonic() + seconds
    while not ready():
        if any(process.poll() is not None for process in watched):
            raise RuntimeError(f"A server process exited at startup:\n{logs()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"A server did not answer within {seconds:.0f} s:\n{logs()}")
        time.sleep(0.1)


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no shutdown handlers, no close frames, sockets simply drop, as in a crash."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def stop(processes: Iterable[subprocess.Popen[bytes]], *, grace: float = 10) -> None:
    """Terminate every process, then kill whichever outlives `grace` seconds."""
    running = list(processes)
    for process in running:
        if process.poll() is None:
            process.terminate()
    for process in running:
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill(process)


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def logs(paths: Iterable[Path], *, chars: int = 4000) -> str:
    """The end of each log, under its name."""
    return "\n".join(
        f"--- {path.name} ---\n{path.read_text(errors='replace')[-chars:]}" for path in paths
    )


class RedisServer:
    """A throwaway redis-server on a free loopback port, without persistence, so a
    restart comes back empty, as a Redis that lost its memory does."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        executable = shutil.which("redis-server")
        assert executable is not None
        log = (self.workdir / "redis.log").open("ab")
        self.process = subprocess.Popen(
            [
                executable,
                *("--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import redis

        deadline = time.monotonic() + 20
        while True:
            try:
                redis.Redis(port=self.port, socket_connect_timeout=1).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            kill(self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop([self.process])
