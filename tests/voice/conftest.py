"""A local stand-in for the Realtime upstream: a real HTTP server on 127.0.0.1 that answers
`POST /v1/realtime/client_secrets` the way OpenAI's GA API does (or fails the way it does)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.upstream_answers import Delivery, answer_write

OPENAI_TEST_KEY = "openai-test-key-DO-NOT-LEAK-5f3a9c1e7b2d"
ENGINE_TEST_KEY = "engine-test-key-DO-NOT-LEAK-8e1d4c7a"


@dataclass
class StubReply:
    status: int = 200
    body: bytes | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    delivery: Delivery = field(default_factory=Delivery)


@dataclass
class StubRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def openai_error(message: str, *, type: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class RealtimeStub:
    """Replies are served in the order queued; with none queued, a valid client secret."""

    def __init__(self) -> None:
        self.replies: deque[StubReply] = deque()
        self.requests: list[StubRequest] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {"unparsed": raw.decode(errors="replace")}
                stub.requests.append(
                    StubRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                reply = stub.replies.popleft() if stub.replies else stub.success()
                if reply.delay:
                    time.sleep(reply.delay)
                payload = reply.body
                data = json.dumps(payload).encode() if isinstance(payload, dict) else payload or b""
                answer_write(
                    self,
                    status=reply.status,
                    body=data,
                    headers=reply.headers,
                    delivery=reply.delivery,
                )

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def success(self, value: str = "ek_test_0123456789abcdef") -> StubReply:
        now = int(time.time())
        return StubReply(
            200,
            {
                "value": value,
                "expires_at": now + 60,
                "session": {"type": "realtime", "object": "realtime.session", "id": "sess_1"},
            },
        )

    def reply(self, status: int = 200, body: Any = None, **extra: Any) -> None:
        self.replies.append(StubReply(status, body, **extra))

    def __enter__(self) -> RealtimeStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def realtime_stub() -> Iterator[RealtimeStub]:
    with RealtimeStub() as stub:
        yield stub


@pytest.fixture
def openai_upstream(settings: Any, realtime_stub: RealtimeStub) -> RealtimeStub:
    """OpenAI mode, with the stub standing in for api.openai.com."""
    settings.OPENAI_API_KEY = OPENAI_TEST_KEY
    settings.REALTIME_BASE_URL = realtime_stub.base_url
    return realtime_stub


@pytest.fixture
def engine_upstream(settings: Any, realtime_stub: RealtimeStub) -> RealtimeStub:
    """Built-in engine mode: no OpenAI key, the stub serving as the engine's HTTP side."""
    settings.OPENAI_API_KEY = ""
    settings.REALTIME_BASE_URL = ""
    settings.ENGINE_URL = realtime_stub.base_url
    settings.ENGINE_API_KEY = ENGINE_TEST_KEY
    return realtime_stub
