"""A real Daphne serving the site's ASGI app on a free loopback port, for engine tests.

The site runs as it does in production (its own process, its own event loop where the
aiortc peers live), with development settings, a throwaway database and its own
ENGINE_API_KEY. The listening socket is bound here and handed to Daphne by file
descriptor, so no other process can take the port in between.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class EngineServer:
    url: str
    api_key: str
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def engine_url(self) -> str:
        return f"{self.url}/engine/v1"

    def log_tail(self, lines: int = 60) -> str:
        path = self.root / "daphne.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _environment(root: Path, api_key: str, max_calls: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST", "DATABASE_URL"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "artterminal.settings",
            "DEBUG": "true",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": f"sqlite:///{root / 'site.sqlite3'}",
            "MEDIA_ROOT": str(root / "media"),
            "OPENAI_API_KEY": "",
            "REALTIME_BASE_URL": "",
            "REDIS_URL": "",
            "ENGINE_API_KEY": api_key,
            "ENGINE_MAX_CALLS": str(max_calls),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _wait_ready(server: EngineServer) -> None:
    deadline = time.monotonic() + 60
    request = urllib.request.Request(  # noqa: S310 - a loopback URL built above
        f"{server.engine_url}/realtime/client_secrets", method="POST", data=b"{}"
    )
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Daphne exited at start:\n{server.log_tail()}")
        try:
            urllib.request.urlopen(request, timeout=2)  # noqa: S310
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Daphne did not answer within 60 s:\n{server.log_tail()}")


def start_engine_server(root: Path, *, max_calls: int = 2) -> EngineServer:
    """Migrate a fresh database, start Daphne on a free port and wait until it answers."""
    root.mkdir(parents=True, exist_ok=True)
    api_key = "sk-engine-" + secrets.token_urlsafe(24)
    env = _environment(root, api_key, max_calls)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    with (root / "daphne.log").open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "--fd",
                str(listener.fileno()),
                "artterminal.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    listener.close()
    server = EngineServer(
        url=f"http://127.0.0.1:{port}", api_key=api_key, root=root, process=process
    )
    try:
        _wait_ready(server)
    except BaseException:
        stop_engine_server(server)
        raise
    return server


def stop_engine_server(server: EngineServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    """One Daphne for the engine tests of a session, with ENGINE_MAX_CALLS=2."""
    server = start_engine_server(tmp_path_factory.mktemp("engine-server"))
    yield server
    stop_engine_server(server)
