"""A real Daphne serving the site from a throwaway database, on a loopback port.

The site runs as in production: its own process and event loop and DEBUG off (Django's
query log and static files handler cost time production does not spend), over plain
HTTP on loopback (so no TLS redirect), with a temporary SQLite database and media
folder, and its own ENGINE_API_KEY. The socket is bound here and handed to Daphne by
file descriptor, so the port is known before start (the site reaches its own engine at
ENGINE_URL, built from PORT) and nobody can take it.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Site:
    url: str
    api_key: str
    root: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :]

    @property
    def engine_url(self) -> str:
        return f"{self.url}/engine/v1"

    def log_tail(self, lines: int = 40) -> str:
        path = self.root / "daphne.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def manage(self, command: str, **arguments: Any) -> Any:
        """Run one `bench.site` command against this site's database; its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.site", command, json.dumps(arguments)],
            cwd=REPO_ROOT,
            env=self.env,
            capture_output=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.site {command} failed:\n{done.stderr.decode()[-3000:]}")
        return json.loads(done.stdout.decode().strip().splitlines()[-1])


def prepare_site(root: Path, **extra_env: str) -> tuple[Site, socket.socket]:
    """A migrated database and a bound socket; Daphne starts with `start_site`."""
    root.mkdir(parents=True, exist_ok=True)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    api_key = "sk-engine-" + secrets.token_urlsafe(24)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST", "DATABASE_URL"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "artterminal.settings",
            "ENV_FILE": "",  # a developer's .env is not the benchmark's
            "DEBUG": "false",
            "SECURE_SSL_REDIRECT": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DATABASE_URL": f"sqlite:///{root / 'site.sqlite3'}",
            "MEDIA_ROOT": str(root / "media"),
            "OPENAI_API_KEY": "",
            "REALTIME_BASE_URL": "",
            "ENGINE_API_KEY": api_key,
            "PORT": str(port),
            "ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.setdefault("REDIS_URL", "")
    env.update(extra_env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    site = Site(url=f"http://127.0.0.1:{port}", api_key=api_key, root=root, env=env)
    return site, listener


def start_site(site: Site, listener: socket.socket) -> Site:
    with (site.root / "daphne.log").open("ab") as log:
        site.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "--fd",
                str(listener.fileno()),
                "artterminal.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=site.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),),
        )
    listener.close()
    try:
        _wait_ready(site)
    except BaseException:
        stop_site(site)
        raise
    return site


def _wait_ready(site: Site) -> None:
    assert site.process is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if site.process.poll() is not None:
            raise RuntimeError(f"Daphne exited at start:\n{site.log_tail()}")
        try:
            with urllib.request.urlopen(f"{site.url}/terminals/", timeout=5) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Daphne did not answer within 90 s:\n{site.log_tail()}")


def stop_site(site: Site) -> None:
    if site.process is None or site.process.poll() is not None:
        return
    site.process.terminate()
    try:
        site.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        site.process.kill()
        site.process.wait(timeout=10)
