"""A real Daphne serving the site's ASGI app on a free loopback port, for engine tests.

The site runs as it does in production (its own process, its own event loop where the
aiortc peers live), with development settings, a throwaway database and its own
ENGINE_API_KEY. The listening socket is handed to Daphne by file descriptor
(`tests.live.start_daphne`), so no other process can take the port in between.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import live

# The one tool the engine tests' sessions declare.
NAVIGATE: dict[str, Any] = {
    "type": "function",
    "name": "navigate_gallery",
    "description": "Show another picture of the gallery.",
    "parameters": {
        "type": "object",
        "properties": {"action": {"type": "string", "enum": ["next", "previous"]}},
        "required": ["action"],
    },
}


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
        return live.log_tail(self.root / "daphne.log", lines)


def start_engine_server(root: Path, *, max_calls: int = 2) -> EngineServer:
    """Migrate a fresh database, start Daphne on a free port and wait until it answers."""
    root.mkdir(parents=True, exist_ok=True)
    env = live.sqlite_environment(root, ENGINE_MAX_CALLS=str(max_calls))
    live.migrate(env)
    process, port = live.start_daphne(env=env, log=root / "daphne.log")
    server = EngineServer(
        url=f"http://127.0.0.1:{port}", api_key=env["ENGINE_API_KEY"], root=root, process=process
    )
    minting = f"{server.engine_url}/realtime/client_secrets"
    try:
        # Unauthenticated minting answers 401 once the engine's routes are up.
        live.wait_until(
            live.answering(minting, status=401, method="POST", data=b"{}", timeout=2),
            [process],
            logs=server.log_tail,
        )
    except BaseException:
        stop_engine_server(server)
        raise
    return server


def stop_engine_server(server: EngineServer) -> None:
    live.stop([server.process], grace=5)


@pytest.fixture(scope="session")
def engine_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineServer]:
    """One Daphne for the engine tests of a session, with ENGINE_MAX_CALLS=2."""
    server = start_engine_server(tmp_path_factory.mktemp("engine-server"))
    yield server
    stop_engine_server(server)
