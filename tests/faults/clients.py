"""Websocket clients that behave like the site's pages, for tests that break the server.

`TerminalClient` follows static/js/terminal.js: reconnect with capped exponential
backoff and jitter, take the state sent on connect as the re-sync, ignore older states
and ask `terminal.sync` after a gap; it never resends a navigation. A client that is its
terminal's only controller can tell, for each navigation, whether it ran: the next state
is version + 1 (its echo, or the state after a reconnect) or the old version (never ran).

`MirrorClient` follows the voice page's mirror (voice/events.py): every event stays in a
resend buffer until its `mirror.ack`, and after a reconnect what is left is resent with
the same seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.typing import Origin

FINAL_CLOSE_CODES = {4003}


@dataclass
class Endpoint:
    url: str
    origin: str
    session: str = ""

    def open(self) -> Any:
        headers = {"Cookie": f"sessionid={self.session}"} if self.session else {}
        return connect(
            self.url,
            origin=Origin(self.origin),
            additional_headers=headers,
            proxy=None,
            open_timeout=10,
            close_timeout=2,
        )


@dataclass
class Backoff:
    """The page's reconnect delays, scaled down so tests wait seconds, not minutes."""

    base: float = 0.1
    cap: float = 1.0
    attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return ceiling / 2 + random.random() * ceiling / 2


@dataclass
class TerminalClient:
    endpoint: Endpoint
    name: str
    version: int = -1
    # Versions of every state received, one list per connection.
    histories: list[list[int]] = field(default_factory=list)
    connections: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    close_codes: list[int | None] = field(default_factory=list)
    socket: ClientConnection | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    first_state: bool = True
    sending: set[asyncio.Future[None]] = field(default_factory=set)
    refused: int = 0
    # The sole controller's bookkeeping (see the module docstring).
    pending_from: int | None = None
    # The connection the navigation in doubt was sent on.
    pending_connection: int = 0
    executed: int = 0
    executed_after_reconnect: int = 0
    not_executed: int = 0
    anomalies: list[str] = field(default_factory=list)
    backoff: Backoff = field(default_factory=Backoff)
    state_arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        """Stay connected until `stop()`, reconnecting like the page."""
        while not self.stopped:
            try:
                async with self.endpoint.open() as socket:
                    self.socket = socket
                    self.backoff.attempt = 0
                    self.connections += 1
                    self.histories.append([])
                    self.first_state = True
                    self.connected.set()
                    async for raw in socket:
                        self._handle(json.loads(raw))
                    self.close_codes.append(socket.close_code)
            except ConnectionClosed as closed:
                # Any code but 1000/1001 ends the iteration with an exception.
                self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
            except (OSError, WebSocketException, TimeoutError):
                pass
            finally:
                self.socket = None
                self.connected.clear()
            if self.close_codes and self.close_codes[-1] in FINAL_CLOSE_CODES:
                return
            if not self.stopped:
                await asyncio.sleep(self.backoff.next_delay())

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "error":
            self.errors.append(message)
            if self.pending_from is not None and self.pending_connection == self.connections:
                # A refusal on the connection that carried it answers the navigation in
                # doubt; one on a later connection (why it closes) does not.
                self.refused += 1
                self.pending_from = None
        if kind != "terminal.state":
            return
        version = int(message["version"])
        first, self.first_state = self.first_state, False
        self.histories[-1].append(version)
        if self.pending_from is not None and version > self.pending_from:
            if version != self.pending_from + 1:
                self.anomalies.append(f"navigated from {self.pending_from}, saw {version}")
            self.executed += 1
            if first:
                self.executed_after_reconnect += 1
            self.pending_from = None
        elif self.pending_from is not None and first:
            # Reconnected and the state is the old one: the navigation never ran.
            self.not_executed += 1
            self.pending_from = None
        if version < self.version:
            return  # stale, as the page ignores it
        gap = self.version >= 0 and version > self.version + 1
        self.version = version
        self.state_arrived.set()
        if gap and not first:
            self.send_soon({"type": "terminal.sync"})

    def send_soon(self, message: dict[str, Any]) -> bool:
        """Send now if connected; like the page, a closed socket means "not sent"."""
        socket = self.socket
        if socket is None:
            return False
        task = asyncio.ensure_future(_send_quietly(socket, message))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)
        return True

    async def navigate(self, action: str, image_id: int | None = None) -> bool:
        message: dict[str, Any] = {"type": "terminal.navigate", "action": action}
        if image_id is not None:
            message["image_id"] = image_id
        socket = self.socket
        if socket is None or self.first_state:
            return False  # offline, or this connection's state has not arrived yet
        version = self.version
        try:
            await socket.send(json.dumps(message))
        except WebSocketException:
            return False  # never reached the server's socket
        self.pending_from = version
        self.pending_connection = self.connections
        return True

    async def settle(self, timeout: float) -> None:
        """Wait until connected with no navigation in doubt."""
        async with asyncio.timeout(timeout):
            while self.socket is None or self.first_state or self.pending_from is not None:
                await asyncio.sleep(0.05)

    async def sync_and_wait(self, timeout: float) -> int:
        """Ask for the current state and return its version."""
        async with asyncio.timeout(timeout):
            while True:
                await self.connected.wait()
                self.state_arrived.clear()
                if self.send_soon({"type": "terminal.sync"}):
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(2):
                            await self.state_arrived.wait()
                            return self.version
                await asyncio.sleep(0.1)

    async def drop(self) -> None:
        """Hang up abruptly, as a closed laptop lid does; the loop reconnects."""
        socket = self.socket
        if socket is not None:
            socket.transport.close()

    async def stop(self) -> None:
        self.stopped = True
        socket = self.socket
        if socket is not None:
            await socket.close()


async def _send_quietly(socket: ClientConnection, message: dict[str, Any]) -> None:
    with contextlib.suppress(WebSocketException):
        await socket.send(json.dumps(message))


@dataclass
class MirrorClient:
    endpoint: Endpoint
    buffer: dict[int, dict[str, Any]] = field(default_factory=dict)
    acked: set[int] = field(default_factory=set)
    results: dict[str, int] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    # HTTP statuses of refused handshakes, and the reasons of `session.ended`.
    refusals: list[int] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    socket: ClientConnection | None = None
    stopped: bool = False
    backoff: Backoff = field(default_factory=Backoff)

    async def run(self) -> None:
        while not self.stopped:
            try:
                async with self.endpoint.open() as socket:
                    self.socket = socket
                    self.backoff.attempt = 0
                    self.connections += 1
                    for seq in sorted(self.buffer):  # resend what was never acked
                        await socket.send(json.dumps(self.buffer[seq]))
                    async for raw in socket:
                        self._handle(json.loads(raw))
                    self.close_codes.append(socket.close_code)
            except ConnectionClosed as closed:
                self.close_codes.append(closed.rcvd.code if closed.rcvd else None)
            except InvalidStatus as refused:
                self.refusals.append(refused.response.status_code)
            except (OSError, WebSocketException, TimeoutError):
                pass
            finally:
                self.socket = None
            if self.ended:
                return  # like the page: an ended session is not reconnected
            if not self.stopped:
                await asyncio.sleep(self.backoff.next_delay())

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "mirror.ack":
            self.buffer.pop(message["seq"], None)
            self.acked.add(message["seq"])
        elif kind == "tool.result":
            self.results[message["call_id"]] = self.results.get(message["call_id"], 0) + 1
        elif kind == "error":
            self.errors.append(message)
        elif kind == "session.ended":
            self.ended.append(str(message.get("reason")))

    async def mirror(self, seq: int, event: dict[str, Any]) -> None:
        """Buffer the event, and send it now if connected (else on reconnect)."""
        message = {"type": "mirror.event", "seq": seq, "direction": "received", "event": event}
        self.buffer[seq] = message
        socket = self.socket
        if socket is not None:
            with contextlib.suppress(WebSocketException):
                await socket.send(json.dumps(message))

    async def drained(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while self.buffer:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"never acked: {sorted(self.buffer)[:10]}, {self.connections} connections, "
                f"errors {self.errors[:3]}, closes {self.close_codes}, session ended "
                f"{self.ended}, handshakes refused {self.refusals[:5]}"
            ) from None

    async def stop(self) -> None:
        self.stopped = True
        if self.socket is not None:
            await self.socket.close()
