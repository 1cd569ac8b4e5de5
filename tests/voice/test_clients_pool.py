"""voice.clients keeps its upstream connections open between mints, against a real
HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.voice.conftest import ENGINE_TEST_KEY
from voice import clients

SESSION = {"type": "realtime", "model": "gpt-realtime"}


class KeepAliveUpstream:
    """Answers every client_secrets POST with a valid secret and a cookie; with
    `close_after_reply`, hangs up after each answer without saying so beforehand."""

    def __init__(self) -> None:
        self.connections = 0
        self.cookies_received: list[str | None] = []
        self.close_after_reply = False
        # Released each time the server has closed a connection: the client may then
        # see the hang-up before its next mint, as it would an idle connection's.
        self.hung_up = threading.Semaphore(0)
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                upstream.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.cookies_received.append(self.headers.get("Cookie"))
                data = json.dumps({"value": "ek_pool", "expires_at": int(time.time()) + 60})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Set-Cookie", "affinity=upstream-node-7; Path=/")
                self.end_headers()
                self.wfile.write(data.encode())
                if upstream.close_after_reply:
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def shutdown_request(self, request: Any) -> None:
                super().shutdown_request(request)
                upstream.hung_up.release()

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def upstream(settings: Any) -> Iterator[KeepAliveUpstream]:
    server = KeepAliveUpstream()
    server.thread.start()
    settings.OPENAI_API_KEY = ""
    settings.REALTIME_BASE_URL = ""
    settings.ENGINE_URL = server.base_url
    settings.ENGINE_API_KEY = ENGINE_TEST_KEY
    # A pool of this test's own, so connections left by other tests do not count.
    clients._session = clients._new_session()
    yield server
    clients._session.close()
    server.server.shutdown()
    server.server.server_close()


def test_mints_reuse_one_connection(upstream: KeepAliveUpstream) -> None:
    for _ in range(3):
        assert clients.client_secret_create(session=SESSION).value == "ek_pool"
    assert upstream.connections == 1
    assert len(upstream.cookies_received) == 3


def test_cookies_from_the_upstream_are_never_sent_back(upstream: KeepAliveUpstream) -> None:
    # The pooled session serves every user's mint: nothing may carry from one to the next.
    for _ in range(2):
        clients.client_secret_create(session=SESSION)
    assert upstream.cookies_received == [None, None]


def test_a_connection_the_upstream_closed_is_replaced_without_a_retry(
    upstream: KeepAliveUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.close_after_reply = True
    with caplog.at_level(logging.INFO, logger="voice.clients"):
        for _ in range(3):
            assert clients.client_secret_create(session=SESSION).value == "ek_pool"
            # The next mint starts once the hang-up is on the wire (not racing it).
            assert upstream.hung_up.acquire(timeout=10)
    assert upstream.connections == 3
    assert len(upstream.cookies_received) == 3
    # Each mint went out once on a fresh connection: the client's retry path never ran.
    assert not [record for record in caplog.records if "retried" in record.getMessage()]
