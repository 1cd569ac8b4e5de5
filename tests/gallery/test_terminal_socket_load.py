"""The terminal socket under load and outages: broadcasts need no database work per
viewer, rights changes reach open sockets without one, commands wait in a bounded queue
that a hang-up drains quickly, and a channel layer that is down loses a broadcast with a
warning instead of failing the navigation that committed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

from artterminal.groups import terminal_group_name
from artterminal.sockets import socket_login_holds
from gallery import consumers, selectors, services
from gallery.events import terminal_state_event
from gallery.models import Terminal, TerminalMembership
from tests.scale.conftest import free_port
from tests.test_sockets_hardening import (  # noqa: F401  (autouse fixtures too)
    Socket,
    cookie_for,
    fresh_counts,
    open_terminal,
    stop_relay_after_test,
)
from voice import services as voice_services
from voice.models import VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)

NEXT = {"type": "terminal.navigate", "action": "next"}


def _version(terminal: Terminal) -> int:
    terminal.refresh_from_db()
    return terminal.version


version = database_sync_to_async(_version)


async def _next_not_a_count(socket: Socket) -> dict[str, Any]:
    while True:
        message = await socket.receive()
        if message["type"] != "terminal.viewers":
            return message


def _busy_database_thread(seconds: float) -> asyncio.Task[None]:
    """Occupy the one database thread the consumers share, as a slow write would."""
    return asyncio.ensure_future(database_sync_to_async(time.sleep)(seconds))


@database_sync_to_async
def _state(terminal: Terminal) -> dict[str, Any]:
    terminal.refresh_from_db()
    return selectors.terminal_state(terminal=terminal)


async def test_broadcasts_reach_every_viewer_while_the_database_is_busy(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    viewers = [await open_terminal(terminal) for _ in range(5)]
    try:
        for viewer in viewers:
            while not await viewer.receive_nothing(0.2):
                await viewer.receive_type("terminal.viewers")
        state = {**await _state(terminal), "version": 1}
        busy = _busy_database_thread(2.0)
        await asyncio.sleep(0.1)
        layer = get_channel_layer()
        assert layer is not None
        await layer.group_send(terminal_group_name(terminal.pk), dict(terminal_state_event(state)))
        started = time.monotonic()
        for viewer in viewers:
            assert (await viewer.receive_type("terminal.state"))["version"] == 1
        # Every viewer had it long before the database thread was free again.
        assert time.monotonic() - started < 1.0
        assert not busy.done()
        await busy
    finally:
        for viewer in viewers:
            await viewer.disconnect()


async def test_a_revoked_membership_closes_the_viewer_without_waiting_for_a_change(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    viewer = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, viewer, TerminalMembership.Role.VIEWER
    )
    socket = await open_terminal(terminal, cookie=await database_sync_to_async(cookie_for)(viewer))
    try:
        await database_sync_to_async(membership.delete)()
        assert await socket.receive_error_and_close() == ("forbidden", 4003)
        assert await version(terminal) == 0
    finally:
        await socket.disconnect()


async def test_a_terminal_made_private_closes_its_anonymous_viewers_only(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    stranger = await open_terminal(terminal)
    mine = await open_terminal(terminal, cookie=await database_sync_to_async(cookie_for)(owner))
    try:
        terminal.is_public = False
        await database_sync_to_async(terminal.save)()
        assert await stranger.receive_error_and_close() == ("forbidden", 4003)
        # The owner's rights did not change: no state or error but the next one.
        await mine.send(NEXT)
        assert (await mine.receive_type("terminal.state"))["version"] == 1
    finally:
        await stranger.disconnect()
        await mine.disconnect()


async def test_navigation_saves_do_not_make_viewers_reread_their_rights(
    make_terminal: Callable[..., Terminal], owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    rereads: list[int] = []
    original = consumers._current_rights

    def counting(**kwargs: Any) -> Any:
        rereads.append(kwargs["terminal_id"])
        return original(**kwargs)

    monkeypatch.setattr(consumers, "_current_rights", counting)
    viewer = await open_terminal(terminal)
    try:
        for _ in range(3):
            await database_sync_to_async(services.terminal_navigate)(
                terminal_id=terminal.pk, user=owner, action="next"
            )
        for expected in (1, 2, 3):
            assert (await viewer.receive_type("terminal.state"))["version"] == expected
        assert rereads == []
    finally:
        await viewer.disconnect()


async def test_a_viewer_made_controller_is_sent_its_new_rights(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    user = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, user, TerminalMembership.Role.VIEWER
    )
    socket = Socket(
        f"/ws/terminals/{terminal.slug}/", cookie=await database_sync_to_async(cookie_for)(user)
    )
    assert await socket.connect()
    try:
        assert (await socket.receive_type("terminal.state"))["can_control"] is False
        membership.role = TerminalMembership.Role.CONTROLLER
        await database_sync_to_async(membership.save)()
        state = await socket.receive_type("terminal.state")
        assert (state["version"], state["can_control"]) == (0, True)
        await socket.send(NEXT)
        assert (await socket.receive_type("terminal.state"))["version"] == 1
    finally:
        await socket.disconnect()


async def test_staff_status_given_later_lets_a_viewer_drive(
    make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    terminal = await database_sync_to_async(make_terminal)()
    user = await database_sync_to_async(make_user)()
    socket = Socket(
        f"/ws/terminals/{terminal.slug}/", cookie=await database_sync_to_async(cookie_for)(user)
    )
    assert await socket.connect()
    try:
        assert (await socket.receive_type("terminal.state"))["can_control"] is False
        user.is_staff = True
        await database_sync_to_async(user.save)()
        assert (await socket.receive_type("terminal.state"))["can_control"] is True
        await socket.send(NEXT)
        assert (await socket.receive_type("terminal.state"))["version"] == 1
    finally:
        await socket.disconnect()


async def test_commands_sent_before_a_hang_up_all_run_and_the_socket_ends_promptly(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=3)
    socket = await open_terminal(terminal, cookie=await database_sync_to_async(cookie_for)(owner))
    busy = _busy_database_thread(0.5)
    for _ in range(10):
        await socket.send(NEXT)
    started = time.monotonic()
    await socket.communicator.disconnect(timeout=consumers.DRAIN_SECONDS + 2)
    assert time.monotonic() - started < consumers.DRAIN_SECONDS
    await busy
    assert await version(terminal) == 10


async def test_a_socket_sending_faster_than_its_commands_run_is_told_busy(
    make_terminal: Callable[..., Terminal], owner: Any, settings: Any
) -> None:
    settings.WEBSOCKET_MESSAGE_BURST = 5
    settings.WEBSOCKET_MESSAGES_PER_SECOND = 1000.0
    terminal = await database_sync_to_async(make_terminal)(images=3)
    socket = await open_terminal(terminal, cookie=await database_sync_to_async(cookie_for)(owner))
    try:
        busy = _busy_database_thread(1.0)
        for _ in range(12):  # within the message rate, faster than the commands run
            await socket.send(NEXT)
            await asyncio.sleep(0.01)
        refused = 0
        while not await socket.receive_nothing(0.2):
            message = await socket.receive()
            if message["type"] == "error":
                assert message["code"] == "busy", message
                refused += 1
        await busy
        ran = 12 - refused
        # One command running, five waiting; everything else was refused, never run.
        assert 5 <= ran <= 7
        states: list[int] = []
        while len(states) < ran:
            states.append((await socket.receive_type("terminal.state"))["version"])
        assert states == list(range(1, ran + 1))
        assert await version(terminal) == ran
    finally:
        await socket.disconnect()


@pytest.fixture
def layer_down(settings: Any) -> None:
    """The channel layer is a Redis nobody listens on, as while Redis restarts."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "artterminal.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": url, "socket_timeout": 2}]},
        }
    }


@pytest.mark.usefixtures("layer_down")
def test_a_navigation_commits_when_its_broadcast_cannot_be_sent(
    make_terminal: Callable[..., Terminal], owner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    terminal = make_terminal(images=3)
    with caplog.at_level(logging.WARNING):
        moved = services.terminal_navigate(terminal_id=terminal.pk, user=owner, action="next")
    assert moved.version == 1 and _version(terminal) == 1
    [record] = [r for r in caplog.records if r.name == "gallery.broadcast"]
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "terminal.state" in record.getMessage()


@pytest.mark.usefixtures("layer_down")
def test_ending_a_voice_session_survives_the_layer_being_down(
    make_terminal: Callable[..., Terminal], owner: Any, caplog: pytest.LogCaptureFixture
) -> None:
    terminal = make_terminal()
    session = VoiceSession.objects.create(
        user=owner, terminal=terminal, upstream="engine", model="m", voice="v"
    )
    with caplog.at_level(logging.WARNING):
        assert voice_services.voice_session_end(session=session, reason="hangup")
    assert session.status == VoiceSession.Status.ENDED
    [record] = [r for r in caplog.records if r.name == "voice.services"]
    assert record.exc_info is None


def test_a_login_is_checked_in_the_database_while_the_session_cache_is_down(
    make_user: Callable[..., Any], settings: Any
) -> None:
    user = make_user()
    store = DatabaseSessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    settings.SESSION_ENGINE = "artterminal.sessions"
    assert socket_login_holds(session_key=store.session_key or "", user_id=user.pk)
    assert not socket_login_holds(session_key=store.session_key or "", user_id=user.pk + 1)


async def test_a_member_removed_before_a_navigation_commits_never_sees_its_picture(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    owner: Any,
    add_member: Callable[..., TerminalMembership],
) -> None:
    """The removal arrives on the member's own channel (its user group) while the next
    state arrives through the terminal's feed: nothing orders the two. With the database
    thread busy, the member's re-read of its rights waits behind a navigation that
    commits after the removal, and the feed hands that navigation's picture to a socket
    still trusting its cached rights."""
    terminal = await database_sync_to_async(make_terminal)(images=3, is_public=False)
    member = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, member, TerminalMembership.Role.VIEWER
    )
    watching = await open_terminal(terminal, await database_sync_to_async(cookie_for)(member))
    driving = await open_terminal(terminal, await database_sync_to_async(cookie_for)(owner))
    try:
        busy = _busy_database_thread(0.5)
        await driving.send(NEXT)  # queued on the database thread behind the slow write
        await asyncio.sleep(0.1)
        # The owner removes the member elsewhere (the admin, another process) and it
        # commits now, before the navigation does.
        await sync_to_async(membership.delete, thread_sensitive=False)()
        await busy
        assert (await driving.receive_type("terminal.state"))["version"] == 1
        first = await _next_not_a_count(watching)
        assert (first["type"], first.get("code")) == ("error", "forbidden"), first
        assert await watching.receive_close() == 4003
    finally:
        await watching.disconnect()
        await driving.disconnect()


async def test_a_navigation_that_commits_after_its_socket_hung_up_still_reaches_the_viewers(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hang-up waits DRAIN_SECONDS for the commands sent before it, then cancels the
    runner. A navigation already on the database thread is not stopped by that: it
    commits, and its broadcast, held for the cancelled runner to send, is sent by nobody."""
    monkeypatch.setattr(consumers, "DRAIN_SECONDS", 0.3)
    navigate = services.terminal_navigate

    def slow_navigate(**kwargs: Any) -> Terminal:
        time.sleep(1.0)  # as one waiting on the terminal's row lock or SQLite's busy timeout
        return navigate(**kwargs)

    monkeypatch.setattr(services, "terminal_navigate", slow_navigate)
    terminal = await database_sync_to_async(make_terminal)(images=3)
    watcher = await open_terminal(terminal)
    driver = await open_terminal(terminal, await database_sync_to_async(cookie_for)(owner))
    try:
        await driver.send(NEXT)
        await asyncio.sleep(0.1)  # on the database thread now
        await driver.disconnect()
        for _ in range(30):
            if await version(terminal) == 1:
                break
            await asyncio.sleep(0.1)
        assert await version(terminal) == 1  # the navigation committed
        heard = []
        while not await watcher.receive_nothing(2.0):
            heard.append(await watcher.receive())
        states = [m["version"] for m in heard if m["type"] == "terminal.state"]
        assert states == [1], heard
    finally:
        await watcher.disconnect()


async def test_progress_held_while_a_members_rights_are_reread_reaches_them_after(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
) -> None:
    """A change that leaves the member watching (made a controller): the progress held
    back while its rights were re-read still reaches it, after the state with its new
    rights."""
    terminal = await database_sync_to_async(make_terminal)(images=1, is_public=False)
    member = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, member, TerminalMembership.Role.VIEWER
    )
    watching = await open_terminal(terminal, await database_sync_to_async(cookie_for)(member))
    try:
        busy = _busy_database_thread(0.5)
        membership.role = TerminalMembership.Role.CONTROLLER
        await sync_to_async(membership.save, thread_sensitive=False)()
        await asyncio.sleep(0.1)  # its re-read waits behind the busy database thread
        progress = {"id": 7, "status": "generating", "progress": 40}
        await get_channel_layer().group_send(
            terminal_group_name(terminal.pk), {"type": "image.progress", "image": progress}
        )
        await busy
        state = await _next_not_a_count(watching)
        assert (state["type"], state["can_control"]) == ("terminal.state", True), state
        assert (await _next_not_a_count(watching)) == {"type": "image.progress", "image": progress}
    finally:
        await watching.disconnect()
