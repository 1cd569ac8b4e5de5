"""The terminal socket, driven through the real ASGI application (origin check, sessions,
routing) with channels' WebsocketCommunicator."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket as net
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import OperationalError
from django.test import Client
from django.utils import timezone

from artterminal.asgi import application
from artterminal.groups import terminal_group_name
from gallery import broadcast, consumers, presence, selectors
from gallery.models import Image, Terminal, TerminalMembership
from gallery.relay import stop_image_relay

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL_ORIGIN = b"http://localhost"
TIMEOUT = 5


@pytest.fixture(autouse=True)
def fresh_viewer_registry(monkeypatch: pytest.MonkeyPatch) -> presence.LocalViewers:
    """Counts start from zero in every test, whatever an earlier test left behind."""
    registry = presence.LocalViewers()
    monkeypatch.setattr(presence, "_registry", registry)
    return registry


@pytest.fixture(autouse=True)
async def stop_relay_after_test() -> AsyncIterator[None]:
    """Connecting starts the image relay on the test's event loop; stop it with the loop."""
    yield
    await stop_image_relay()


@pytest.fixture
def session_cookie() -> Callable[[Any], bytes]:
    """A `Cookie` header for a logged-in browser, as AuthMiddlewareStack reads it."""

    def make(user: Any) -> bytes:
        client = Client()
        client.force_login(user)
        value = client.cookies[settings.SESSION_COOKIE_NAME].value
        return f"{settings.SESSION_COOKIE_NAME}={value}".encode()

    return make


class Socket:
    def __init__(self, slug: str, *, cookie: bytes | None = None, origin: bytes = LOCAL_ORIGIN):
        headers = [(b"origin", origin)]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        self.communicator = WebsocketCommunicator(
            application, f"/ws/terminals/{slug}/", headers=headers
        )

    async def connect(self) -> tuple[bool, Any]:
        return await self.communicator.connect(timeout=TIMEOUT)

    async def receive(self) -> dict[str, Any]:
        message = await self.communicator.receive_json_from(timeout=TIMEOUT)
        assert isinstance(message, dict)
        return message

    async def send(self, data: Any) -> None:
        await self.communicator.send_json_to(data)

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive_nothing(self, timeout: float = 0.2) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def receive_close(self) -> int | None:
        output = await self.communicator.receive_output(timeout=TIMEOUT)
        assert output["type"] == "websocket.close", output
        return output.get("code")

    async def disconnect(self) -> None:
        await self.communicator.disconnect()


async def open_socket(slug: str, *, cookie: bytes | None = None) -> tuple[Socket, dict[str, Any]]:
    """A connected socket and the `terminal.state` it gets first."""
    socket = Socket(slug, cookie=cookie)
    connected, _ = await socket.connect()
    assert connected
    state = await socket.receive()
    assert state["type"] == "terminal.state"
    return socket, state


async def refused_for_good(socket: Socket) -> bool:
    """Accepted only to hear why, then closed with 4003, which the page does not retry
    (a handshake refused outright looks to it like a dropped connection)."""
    connected, _ = await socket.connect()
    assert connected
    error = await socket.receive()
    # The same whether it does not exist or is private: nothing to probe.
    assert error == {
        "type": "error",
        "code": "terminal_not_found",
        "message": "There is no such terminal.",
    }
    code = await socket.receive_close()
    await socket.disconnect()
    return code == 4003


def _version(terminal: Terminal) -> int:
    terminal.refresh_from_db()
    return terminal.version


version = database_sync_to_async(_version)


@database_sync_to_async
def terminal_image_ids(terminal: Terminal) -> list[int]:
    return list(selectors.terminal_images(terminal=terminal).values_list("id", flat=True))


async def test_anonymous_watches_a_public_terminal_but_cannot_navigate(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    ids = await terminal_image_ids(terminal)

    socket, state = await open_socket(terminal.slug)
    try:
        assert set(state) == {"type", "version", "image", "viewers", "neighbours", "can_control"}
        assert state["version"] == 0
        assert state["can_control"] is False
        assert state["viewers"] == 1
        image = state["image"]
        assert set(image) == {"id", "title", "prompt", "url", "thumbnail_url", "position", "count"}
        assert (image["id"], image["position"], image["count"]) == (ids[0], 1, 3)
        assert image["url"].startswith(f"{settings.MEDIA_URL}images/")
        assert image["thumbnail_url"].startswith(f"{settings.MEDIA_URL}thumbnails/")
        assert [n["id"] for n in state["neighbours"]] == ids
        assert [n["position"] for n in state["neighbours"]] == [1, 2, 3]

        await socket.send({"type": "terminal.navigate", "action": "next"})
        error = await socket.receive()
        assert (error["type"], error["code"]) == ("error", "forbidden")
        assert error["message"]
        assert await socket.receive_nothing()
        assert await version(terminal) == 0
    finally:
        await socket.disconnect()


async def test_private_terminal_refuses_anonymous_and_strangers(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    stranger = await database_sync_to_async(make_user)()
    cookie = await database_sync_to_async(session_cookie)(stranger)

    for socket in (Socket(terminal.slug), Socket(terminal.slug, cookie=cookie)):
        assert await refused_for_good(socket)


async def test_member_viewer_watches_a_private_terminal_but_cannot_navigate(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    viewer = await database_sync_to_async(make_user)()
    await database_sync_to_async(add_member)(terminal, viewer, TerminalMembership.Role.VIEWER)
    cookie = await database_sync_to_async(session_cookie)(viewer)

    socket, state = await open_socket(terminal.slug, cookie=cookie)
    try:
        assert state["can_control"] is False
        for action in ("next", "previous", "first", "last"):
            await socket.send({"type": "terminal.navigate", "action": action})
            assert (await socket.receive())["code"] == "forbidden"
        assert await version(terminal) == 0
    finally:
        await socket.disconnect()


async def test_controller_navigates_and_every_viewer_gets_the_new_state(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=4)
    ids = await terminal_image_ids(terminal)
    controller = await database_sync_to_async(make_user)()
    await database_sync_to_async(add_member)(terminal, controller)
    cookie = await database_sync_to_async(session_cookie)(controller)

    driver, driver_state = await open_socket(terminal.slug, cookie=cookie)
    watcher, watcher_state = await open_socket(terminal.slug)
    try:
        assert driver_state["can_control"] is True
        assert watcher_state["can_control"] is False
        assert (await driver.receive())["type"] == "terminal.viewers"

        await driver.send({"type": "terminal.navigate", "action": "next"})
        seen = await watcher.receive()
        assert seen["type"] == "terminal.state"
        assert seen["version"] == watcher_state["version"] + 1
        assert seen["image"]["id"] == ids[1]
        assert seen["image"]["position"] == 2
        assert seen["can_control"] is False
        assert seen["viewers"] == 2
        assert [n["id"] for n in seen["neighbours"]] == ids
        own = await driver.receive()
        assert own["type"] == "terminal.state"
        assert own["version"] == seen["version"]
        assert own["can_control"] is True

        await driver.send({"type": "terminal.navigate", "action": "goto", "image_id": ids[3]})
        seen = await watcher.receive()
        assert (seen["version"], seen["image"]["id"]) == (2, ids[3])
        assert await version(terminal) == 2
    finally:
        await driver.disconnect()
        await watcher.disconnect()


@pytest.mark.parametrize("who", ["owner", "staff"])
async def test_owner_and_staff_control_any_terminal(
    who: str,
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3, is_public=False)
    ids = await terminal_image_ids(terminal)
    user = owner if who == "owner" else await database_sync_to_async(make_user)(is_staff=True)
    cookie = await database_sync_to_async(session_cookie)(user)

    socket, state = await open_socket(terminal.slug, cookie=cookie)
    try:
        assert state["can_control"] is True
        await socket.send({"type": "terminal.navigate", "action": "last"})
        moved = await socket.receive()
        assert (moved["type"], moved["version"], moved["image"]["id"]) == (
            "terminal.state",
            1,
            ids[-1],
        )
        await socket.send({"type": "terminal.navigate", "action": "next"})
        wrapped = await socket.receive()
        assert (wrapped["version"], wrapped["image"]["id"]) == (2, ids[0])
    finally:
        await socket.disconnect()


NAVIGATE = {"type": "terminal.navigate"}
BAD_MESSAGES = [
    pytest.param("not json at all", "invalid_json", id="not-json"),
    pytest.param('{"type": "terminal.sync"', "invalid_json", id="truncated"),
    pytest.param("[" * 10_000 + "]" * 10_000, "invalid_json", id="deep-nesting"),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto"})[:-1] + ', "image_id": ' + "9" * 5000 + "}",
        "invalid_json",
        id="huge-number",
    ),
    pytest.param('{"type": "terminal.navigate", "action": NaN}', "invalid_json", id="nan"),
    pytest.param("[1, 2]", "invalid_message", id="array"),
    pytest.param('"terminal.sync"', "invalid_message", id="string"),
    pytest.param("null", "invalid_message", id="null"),
    pytest.param("{}", "missing_type", id="no-type"),
    pytest.param('{"type": 5}', "missing_type", id="type-not-string"),
    pytest.param('{"type": "terminal.explode"}', "unknown_type", id="unknown-type"),
    pytest.param('{"type": "terminal.state"}', "unknown_type", id="server-type"),
    pytest.param(json.dumps(NAVIGATE), "missing_field", id="no-action"),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "next", "force": True}),
        "unexpected_field",
        id="extra-field",
    ),
    pytest.param(
        json.dumps({"type": "terminal.sync", "version": 3}), "unexpected_field", id="sync-extra"
    ),
    pytest.param(
        json.dumps({"type": "terminal.sync", "jobs": 1}), "invalid_field", id="sync-jobs-number"
    ),
    pytest.param(json.dumps({**NAVIGATE, "action": 5}), "invalid_field", id="action-number"),
    pytest.param(json.dumps({**NAVIGATE, "action": None}), "invalid_field", id="action-null"),
    pytest.param(json.dumps({**NAVIGATE, "action": "sideways"}), "invalid_action", id="action"),
    pytest.param(json.dumps({**NAVIGATE, "action": "NEXT"}), "invalid_action", id="action-case"),
    pytest.param(json.dumps({**NAVIGATE, "action": "search"}), "invalid_action", id="search"),
    pytest.param(json.dumps({**NAVIGATE, "action": "goto"}), "missing_field", id="goto-no-id"),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto", "image_id": "1"}), "invalid_field", id="id-str"
    ),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto", "image_id": True}), "invalid_field", id="id-bool"
    ),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto", "image_id": 1.5}), "invalid_field", id="id-float"
    ),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto", "image_id": 10**30}),
        "image_not_found",
        id="id-overflow",
    ),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "goto", "image_id": -1}),
        "image_not_found",
        id="id-negative",
    ),
    pytest.param(
        json.dumps({**NAVIGATE, "action": "next", "image_id": 1}),
        "unexpected_field",
        id="id-without-goto",
    ),
]


@pytest.mark.parametrize(("text", "code"), BAD_MESSAGES)
async def test_malformed_messages_get_an_error_and_are_never_executed(
    text: str,
    code: str,
    make_terminal: Callable[..., Terminal],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    cookie = await database_sync_to_async(session_cookie)(owner)
    socket, _ = await open_socket(terminal.slug, cookie=cookie)
    try:
        await socket.send_text(text)
        error = await socket.receive()
        assert (error["type"], error["code"]) == ("error", code)
        assert isinstance(error["message"], str)
        assert error["message"]
        assert await version(terminal) == 0
        # The socket lives on and still answers.
        await socket.send({"type": "terminal.sync"})
        assert (await socket.receive())["type"] == "terminal.state"
    finally:
        await socket.disconnect()


async def test_binary_frames_are_refused(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    socket, _ = await open_socket(terminal.slug)
    try:
        await socket.communicator.send_to(bytes_data=b'{"type": "terminal.sync"}')
        assert (await socket.receive())["code"] == "binary_not_supported"
        await socket.send({"type": "terminal.sync"})
        assert (await socket.receive())["type"] == "terminal.state"
    finally:
        await socket.disconnect()


async def test_goto_an_image_of_another_terminal_is_not_found(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(slug="lobby")
    other = await database_sync_to_async(make_terminal)(slug="annex")
    foreign_id = (await terminal_image_ids(other))[1]
    cookie = await database_sync_to_async(session_cookie)(owner)
    socket, _ = await open_socket(terminal.slug, cookie=cookie)
    try:
        await socket.send({**NAVIGATE, "action": "goto", "image_id": foreign_id})
        error = await socket.receive()
        assert (error["type"], error["code"]) == ("error", "image_not_found")
        assert await socket.receive_nothing()
        assert await version(terminal) == 0
        assert await version(other) == 0
    finally:
        await socket.disconnect()


async def test_navigating_an_empty_terminal_is_an_error(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=0)
    cookie = await database_sync_to_async(session_cookie)(owner)
    socket, state = await open_socket(terminal.slug, cookie=cookie)
    try:
        assert state["image"] is None
        assert state["neighbours"] == []
        await socket.send({**NAVIGATE, "action": "next"})
        assert (await socket.receive())["code"] == "empty_terminal"
    finally:
        await socket.disconnect()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param("x" * (64 * 1024 + 1), id="ascii"),
        # Fewer characters than the limit, more bytes: the limit is in bytes.
        pytest.param('{"type": "' + "€" * 30_000 + '"}', id="multibyte"),
    ],
)
async def test_oversized_messages_are_refused_and_the_socket_closed(
    payload: str, make_terminal: Callable[..., Terminal]
) -> None:
    assert settings.WEBSOCKET_MAX_MESSAGE_BYTES == 64 * 1024
    terminal = await database_sync_to_async(make_terminal)()
    socket, _ = await open_socket(terminal.slug)
    try:
        await socket.send_text(payload)
        error = await socket.receive()
        assert (error["type"], error["code"]) == ("error", "message_too_large")
        assert await socket.receive_close() == 4009
    finally:
        await socket.disconnect()


async def test_oversized_binary_frames_close_too(make_terminal: Callable[..., Terminal]) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    socket, _ = await open_socket(terminal.slug)
    try:
        await socket.communicator.send_to(bytes_data=b"x" * (64 * 1024 + 1))
        assert (await socket.receive())["code"] == "message_too_large"
        assert await socket.receive_close() == 4009
    finally:
        await socket.disconnect()


async def test_a_message_at_the_limit_is_parsed(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    socket, _ = await open_socket(terminal.slug)
    try:
        text = '{"type": "terminal.sync"}'
        await socket.send_text(text + " " * (64 * 1024 - len(text)))
        assert (await socket.receive())["type"] == "terminal.state"
    finally:
        await socket.disconnect()


async def test_nothing_queued_behind_an_oversized_frame_runs(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    cookie = await database_sync_to_async(session_cookie)(owner)
    socket, _ = await open_socket(terminal.slug, cookie=cookie)
    try:
        await socket.send_text("x" * (64 * 1024 + 1))
        await socket.send({**NAVIGATE, "action": "next"})
        assert (await socket.receive())["code"] == "message_too_large"
        assert await socket.receive_close() == 4009
        assert await socket.receive_nothing()
        assert await version(terminal) == 0
    finally:
        await socket.disconnect()


@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"http://localhost.evil.example", b"null"]
)
async def test_foreign_origin_is_refused_at_the_handshake(
    origin: bytes, make_terminal: Callable[..., Terminal]
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    socket = Socket(terminal.slug, origin=origin)
    connected, _ = await socket.connect()
    assert not connected
    await socket.disconnect()


async def test_missing_origin_is_refused(make_terminal: Callable[..., Terminal]) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    communicator = WebsocketCommunicator(application, f"/ws/terminals/{terminal.slug}/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert not connected
    await communicator.disconnect()


async def test_unknown_terminal_is_refused(make_terminal: Callable[..., Terminal]) -> None:
    await database_sync_to_async(make_terminal)(slug="lobby")
    assert await refused_for_good(Socket("no-such-terminal"))


async def test_sync_answers_with_the_current_state(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    ids = await terminal_image_ids(terminal)
    socket, _ = await open_socket(terminal.slug)
    try:
        # A change this socket never heard of (as after a dropped connection).
        await database_sync_to_async(Terminal.objects.filter(pk=terminal.pk).update)(
            current_image_id=ids[2], version=7
        )
        assert await socket.receive_nothing()
        await socket.send({"type": "terminal.sync"})
        fresh = await socket.receive()
        assert fresh["type"] == "terminal.state"
        assert (fresh["version"], fresh["image"]["id"], fresh["image"]["position"]) == (
            7,
            ids[2],
            3,
        )
        assert fresh["viewers"] == 1
        # Asked again, it answers again even though nothing changed.
        await socket.send({"type": "terminal.sync"})
        assert (await socket.receive())["version"] == 7
    finally:
        await socket.disconnect()


@pytest.mark.parametrize(
    "failure",
    [
        OperationalError("server closed the connection unexpectedly"),
        RuntimeError("a fault nobody foresaw"),
    ],
)
async def test_a_command_that_fails_is_answered_and_the_next_ones_still_run(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    session_cookie: Callable[[Any], bytes],
    monkeypatch: pytest.MonkeyPatch,
    failure: Exception,
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    cookie = await database_sync_to_async(session_cookie)(owner)
    socket, first = await open_socket(terminal.slug, cookie=cookie)
    reads = consumers._state_and_rights
    failures = iter([failure])

    def read_once_failing(**kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return reads(**kwargs)

    async def next_state() -> dict[str, Any]:
        while (message := await socket.receive())["type"] != "terminal.state":
            pass
        return message

    monkeypatch.setattr(consumers, "_state_and_rights", read_once_failing)
    try:
        await socket.send({"type": "terminal.sync"})
        assert (await socket.receive())["code"] == "unavailable"
        await socket.send({"type": "terminal.navigate", "action": "next"})
        moved = await next_state()
        assert moved["version"] == first["version"] + 1
        await socket.send({"type": "terminal.sync"})
        assert (await next_state())["version"] == moved["version"]
    finally:
        await socket.disconnect()


async def test_viewer_counts_follow_joins_and_leaves(
    make_terminal: Callable[..., Terminal],
    fresh_viewer_registry: presence.LocalViewers,
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    other = await database_sync_to_async(make_terminal)(slug="annex")
    first, first_state = await open_socket(terminal.slug)
    elsewhere, elsewhere_state = await open_socket(other.slug)
    second = third = None
    try:
        assert first_state["viewers"] == 1
        assert elsewhere_state["viewers"] == 1

        second, second_state = await open_socket(terminal.slug)
        assert second_state["viewers"] == 2
        assert await first.receive() == {"type": "terminal.viewers", "viewers": 2}

        third, third_state = await open_socket(terminal.slug)
        assert third_state["viewers"] == 3
        assert await first.receive() == {"type": "terminal.viewers", "viewers": 3}
        assert await second.receive() == {"type": "terminal.viewers", "viewers": 3}

        await second.disconnect()
        second = None
        assert await first.receive() == {"type": "terminal.viewers", "viewers": 2}
        assert await third.receive() == {"type": "terminal.viewers", "viewers": 2}
        # Another terminal's viewers are not counted here, nor told.
        assert await elsewhere.receive_nothing()
        assert await fresh_viewer_registry.count(terminal_id=terminal.pk) == 2

        await third.disconnect()
        third = None
        assert await first.receive() == {"type": "terminal.viewers", "viewers": 1}
    finally:
        for socket in (first, second, third, elsewhere):
            if socket is not None:
                await socket.disconnect()
    assert await fresh_viewer_registry.count(terminal_id=terminal.pk) == 0
    assert await fresh_viewer_registry.count(terminal_id=other.pk) == 0


async def test_a_crowd_arriving_at_once_is_announced_once_not_per_arrival(
    make_terminal: Callable[..., Terminal],
    fresh_viewer_registry: presence.LocalViewers,
) -> None:
    """A room opening the page together: each arrival used to send the count to every
    viewer (N² messages); the process now gathers arrivals and departures for a moment
    and announces the count as it stands then."""
    terminal = await database_sync_to_async(make_terminal)()
    layer = get_channel_layer()
    group_listener = await layer.new_channel()  # hears what the terminal's group hears
    await layer.group_add(terminal_group_name(terminal.pk), group_listener)
    first, _ = await open_socket(terminal.slug)
    crowd: list[Socket] = []
    try:
        assert await _announced(layer, group_listener) == [1]
        crowd = [Socket(terminal.slug) for _ in range(12)]
        for connected, _ in await asyncio.gather(*(socket.connect() for socket in crowd)):
            assert connected
        counts = await _announced(layer, group_listener)
        assert 1 <= len(counts) <= 3 and counts[-1] == 13, counts
        assert [m["viewers"] for m in await _heard(first)][-1] == 13
        # Each newcomer hears its state first, with the count as it joined; what each
        # ends up showing is the total.
        for socket in crowd:
            heard = await _heard(socket)
            assert [m["type"] for m in heard].count("terminal.state") == 1
            assert heard[0]["type"] == "terminal.state", heard
            assert heard[-1]["viewers"] == 13

        await asyncio.gather(*(socket.disconnect() for socket in crowd))
        crowd = []
        counts = await _announced(layer, group_listener)
        assert 1 <= len(counts) <= 3 and counts[-1] == 1, counts
        assert [m["viewers"] for m in await _heard(first)] == [1]
    finally:
        await asyncio.gather(*(socket.disconnect() for socket in [first, *crowd]))
        await layer.group_discard(terminal_group_name(terminal.pk), group_listener)
    assert await fresh_viewer_registry.count(terminal_id=terminal.pk) == 0


async def test_a_count_announced_while_a_newcomer_reads_its_state_waits_for_the_state(
    make_terminal: Callable[..., Terminal],
    fresh_viewer_registry: presence.LocalViewers,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The page draws the terminal from its first message, so that must be the state,
    even when an announcement reaches the socket while its state is still being read."""
    terminal = await database_sync_to_async(make_terminal)()
    leaving, _ = await open_socket(terminal.slug)
    read_state = consumers._state_and_rights

    def slow_read(**kwargs: Any) -> Any:
        time.sleep(presence.ANNOUNCE_SECONDS * 3)  # on the database thread; the loop runs on
        return read_state(**kwargs)

    monkeypatch.setattr(consumers, "_state_and_rights", slow_read)
    newcomer = Socket(terminal.slug)
    connecting = asyncio.create_task(newcomer.connect())
    try:
        # Counted means listening: the newcomer joined the feed before it was counted.
        while await fresh_viewer_registry.count(terminal_id=terminal.pk) < 2:
            await asyncio.sleep(0.01)
        await leaving.disconnect()  # announced, as 1, while the newcomer's state is read
        connected, _ = await connecting
        assert connected
        heard = await _heard(newcomer)
        assert heard[0]["type"] == "terminal.state", heard
        assert heard[-1]["viewers"] == 1, heard
    finally:
        await newcomer.disconnect()


async def _announced(layer: Any, channel: str, quiet: float = 0.6) -> list[int]:
    """The viewer counts sent to a terminal's group until it goes quiet."""
    counts: list[int] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), quiet)
        except TimeoutError:
            return counts
        if message["type"] == "terminal.viewers":
            counts.append(message["viewers"])


async def _heard(socket: Socket, quiet: float = 0.6) -> list[dict[str, Any]]:
    """What a socket hears until it goes quiet: counts, and a newcomer's first state."""
    heard = []
    while not await socket.receive_nothing(quiet):
        message = await socket.receive()
        assert message["type"] in ("terminal.viewers", "terminal.state"), message
        heard.append(message)
    return heard


async def test_refused_sockets_are_not_counted(
    make_terminal: Callable[..., Terminal],
    fresh_viewer_registry: presence.LocalViewers,
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    assert await refused_for_good(Socket(terminal.slug))
    assert await fresh_viewer_registry.count(terminal_id=terminal.pk) == 0


async def test_two_controllers_racing_get_one_version_per_command(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    owner: Any,
    add_member: Callable[..., TerminalMembership],
    session_cookie: Callable[[Any], bytes],
) -> None:
    per_socket = 20
    terminal = await database_sync_to_async(make_terminal)(images=5)
    ids = await terminal_image_ids(terminal)
    rival = await database_sync_to_async(make_user)()
    await database_sync_to_async(add_member)(terminal, rival)
    owner_cookie = await database_sync_to_async(session_cookie)(owner)
    rival_cookie = await database_sync_to_async(session_cookie)(rival)

    one, _ = await open_socket(terminal.slug, cookie=owner_cookie)
    two, _ = await open_socket(terminal.slug, cookie=rival_cookie)
    watcher, _ = await open_socket(terminal.slug)
    try:
        for socket in (one, two, watcher):
            while await socket.receive_nothing(timeout=0.2) is False:
                assert (await socket.receive())["type"] == "terminal.viewers"

        for _ in range(per_socket):
            await one.send({**NAVIGATE, "action": "next"})
            await two.send({**NAVIGATE, "action": "next"})

        total = 2 * per_socket
        for socket in (one, two, watcher):
            states = [await socket.receive() for _ in range(total)]
            assert {state["type"] for state in states} == {"terminal.state"}
            versions = [state["version"] for state in states]
            assert versions == list(range(1, total + 1))
            # Every "next" moved exactly one step on from the state before it.
            shown = [state["image"]["id"] for state in states]
            assert shown == [ids[v % len(ids)] for v in range(1, total + 1)]
            assert await socket.receive_nothing()
        assert await version(terminal) == total
    finally:
        for socket in (one, two, watcher):
            await socket.disconnect()


async def test_a_viewer_whose_access_was_revoked_is_closed_on_the_next_change(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    owner: Any,
    add_member: Callable[..., TerminalMembership],
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    viewer = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, viewer, TerminalMembership.Role.VIEWER
    )
    viewer_cookie = await database_sync_to_async(session_cookie)(viewer)
    owner_cookie = await database_sync_to_async(session_cookie)(owner)

    watching, _ = await open_socket(terminal.slug, cookie=viewer_cookie)
    driving, _ = await open_socket(terminal.slug, cookie=owner_cookie)
    try:
        assert (await watching.receive())["type"] == "terminal.viewers"
        await database_sync_to_async(membership.delete)()
        await driving.send({**NAVIGATE, "action": "next"})
        assert (await driving.receive())["version"] == 1

        error = await watching.receive()
        assert (error["type"], error["code"]) == ("error", "forbidden")
        assert await watching.receive_close() == 4003
    finally:
        await watching.disconnect()
        await driving.disconnect()


async def test_logout_closes_the_users_sockets_only(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    session_cookie: Callable[[Any], bytes],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    user = await database_sync_to_async(make_user)()
    cookie = await database_sync_to_async(session_cookie)(user)
    mine, _ = await open_socket(terminal.slug, cookie=cookie)
    anonymous, _ = await open_socket(terminal.slug)
    try:
        assert (await mine.receive())["type"] == "terminal.viewers"
        await sync_to_async(broadcast.user_sockets_close)(user_id=user.pk)
        assert await mine.receive_close() == 4001
        assert await anonymous.receive_nothing()
    finally:
        await mine.disconnect()
        await anonymous.disconnect()


async def test_image_progress_reaches_the_terminals_viewers(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(slug="lobby")
    other = await database_sync_to_async(make_terminal)(slug="annex")
    image = await database_sync_to_async(make_image)(
        terminal=terminal, prompt="a green heron", status=Image.Status.GENERATING
    )
    here, _ = await open_socket(terminal.slug)
    there, _ = await open_socket(other.slug)
    try:
        await sync_to_async(broadcast.image_changed)(image=image)
        message = await here.receive()
        assert message["type"] == "image.progress"
        assert message["image"]["id"] == image.pk
        assert message["image"]["status"] == "generating"
        assert message["image"]["prompt"] == "a green heron"
        assert await there.receive_nothing()
    finally:
        await here.disconnect()
        await there.disconnect()


async def test_a_deleted_terminal_closes_its_sockets(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    image = await database_sync_to_async(make_image)(terminal=terminal)
    socket, _ = await open_socket(terminal.slug)
    try:
        await database_sync_to_async(Terminal.objects.filter(pk=terminal.pk).delete)()
        image.terminal_id = terminal.pk  # the payload built before the row went away
        await sync_to_async(broadcast.image_changed)(image=image)
        assert (await socket.receive())["code"] == "terminal_not_found"
        assert await socket.receive_close() == 4003
    finally:
        await socket.disconnect()


async def test_local_viewer_counts_never_go_negative() -> None:
    registry = presence.LocalViewers()
    assert await registry.leave(terminal_id=1, channel_name="never-joined") == 0
    assert await registry.join(terminal_id=1, channel_name="a") == 1
    assert await registry.join(terminal_id=1, channel_name="a") == 1
    assert await registry.leave(terminal_id=1, channel_name="a") == 0
    assert await registry.leave(terminal_id=1, channel_name="a") == 0
    assert await registry.count(terminal_id=1) == 0


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server for this test, where the machine has one."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed")
    with net.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                net.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_redis_viewer_counts_are_shared_and_expire(redis_url: str) -> None:
    # Two registries stand for two Daphne processes.
    one = presence.RedisViewers(redis_url, ttl_seconds=1.0)
    two = presence.RedisViewers(redis_url, ttl_seconds=1.0)
    assert await one.join(terminal_id=7, channel_name="a") == 1
    assert await two.join(terminal_id=7, channel_name="b") == 2
    assert await two.join(terminal_id=8, channel_name="c") == 1
    assert await one.count(terminal_id=7) == 2
    assert await one.leave(terminal_id=7, channel_name="a") == 1
    assert await one.leave(terminal_id=7, channel_name="a") == 1
    assert await one.leave(terminal_id=9, channel_name="z") == 0

    # "b" keeps refreshing; "c" belongs to a process that died.
    for _ in range(3):
        await asyncio.sleep(0.5)
        assert await two.refresh(terminal_id=7, channel_name="b") == 1
    assert await one.count(terminal_id=7) == 1
    assert await one.count(terminal_id=8) == 0


async def test_sockets_keep_their_place_in_a_shared_registry(
    redis_url: str,
    make_terminal: Callable[..., Terminal],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = presence.RedisViewers(redis_url, ttl_seconds=0.9)
    monkeypatch.setattr(presence, "_registry", registry)
    terminal = await database_sync_to_async(make_terminal)()
    # A viewer on another process that dies without leaving.
    await registry.join(terminal_id=terminal.pk, channel_name="lost-process!socket")

    watcher, state = await open_socket(terminal.slug)
    try:
        assert state["viewers"] == 2
        # The lost viewer expires; this one, refreshed every 0.3 s, stays and is told.
        assert await watcher.receive() == {"type": "terminal.viewers", "viewers": 1}
        await asyncio.sleep(1.5)
        assert await registry.count(terminal_id=terminal.pk) == 1
        assert await watcher.receive_nothing()
    finally:
        await watcher.disconnect()
    assert await registry.count(terminal_id=terminal.pk) == 0


async def test_a_sync_asking_for_jobs_hears_how_they_stand(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
) -> None:
    """What a page back from an outage needs for its "In the works" list: jobs still
    being made and those that failed lately; one that failed long ago is old news."""
    terminal = await database_sync_to_async(make_terminal)(slug="lobby")

    def jobs() -> tuple[Image, Image, Image]:
        making = make_image(terminal=terminal, status=Image.Status.GENERATING, prompt="a heron")
        failed = make_image(terminal=terminal, status=Image.Status.FAILED, error="No paint.")
        old = make_image(terminal=terminal, status=Image.Status.FAILED, error="Long ago.")
        Image.objects.filter(pk=old.pk).update(
            updated_at=timezone.now() - consumers.JOBS_FAILED_WITHIN - timedelta(minutes=1)
        )
        return making, failed, old

    making, failed, _ = await database_sync_to_async(jobs)()
    socket, _ = await open_socket(terminal.slug)
    try:
        await socket.send({"type": "terminal.sync"})
        assert (await socket.receive())["type"] == "terminal.state"
        assert await socket.receive_nothing()  # a plain sync is the state alone

        await socket.send({"type": "terminal.sync", "jobs": True})
        assert (await socket.receive())["type"] == "terminal.state"
        message = await socket.receive()
        assert message["type"] == "terminal.jobs"
        assert [(job["id"], job["status"], job["error"]) for job in message["images"]] == [
            (making.pk, "generating", ""),
            (failed.pk, "failed", "No paint."),
        ]
    finally:
        await socket.disconnect()
