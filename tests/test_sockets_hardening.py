"""Both websockets under attack and after a login ends: message rate, sockets per user,
logout, deactivation and the periodic re-check of the session, through the real ASGI
application (origin check, session cookie, routing)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client

from artterminal import sockets
from artterminal.asgi import application
from gallery import presence
from gallery.models import Terminal
from gallery.relay import stop_image_relay
from tests.gallery.test_consumers import redis_url  # noqa: F401  (a fixture)
from voice.models import ToolCall, VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL_ORIGIN = b"http://localhost"
TIMEOUT = 5
PASSWORD = "a-long-test-password"


@pytest.fixture(autouse=True)
def fresh_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Viewer and socket counts start from zero in every test."""
    monkeypatch.setattr(presence, "_registry", presence.LocalViewers())
    monkeypatch.setattr(sockets, "_counters", {})


@pytest.fixture(autouse=True)
async def stop_relay_after_test() -> AsyncIterator[None]:
    yield
    await stop_image_relay()


def cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


class Socket:
    """A browser's websocket to `path`, logged in with `cookie` when given."""

    def __init__(self, path: str, *, cookie: bytes | None = None) -> None:
        headers = [(b"origin", LOCAL_ORIGIN)]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        self.communicator = WebsocketCommunicator(application, path, headers=headers)

    async def connect(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=TIMEOUT)
        return bool(connected)

    async def send(self, data: Any) -> None:
        await self.communicator.send_json_to(data)

    async def receive(self) -> dict[str, Any]:
        message = await self.communicator.receive_json_from(timeout=TIMEOUT)
        assert isinstance(message, dict)
        return message

    async def receive_type(self, kind: str) -> dict[str, Any]:
        """The next message of type `kind`, skipping viewer counts."""
        while True:
            message = await self.receive()
            if message["type"] == kind:
                return message
            assert message["type"] == "terminal.viewers", message

    async def receive_close(self) -> int | None:
        """The close code, after any viewer counts still on their way."""
        while True:
            output = await self.communicator.receive_output(timeout=TIMEOUT)
            if output["type"] == "websocket.close":
                return output.get("code")
            assert '"terminal.viewers"' in output.get("text", ""), output

    async def receive_error_and_close(self) -> tuple[str, int | None]:
        """The `error` a refused socket gets, then its close code (viewer counts skipped)."""
        error = await self.receive_type("error")
        return error["code"], await self.receive_close()

    async def receive_nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout=timeout)

    async def disconnect(self) -> None:
        await self.communicator.disconnect()


async def assert_still_open(socket: Socket) -> None:
    await socket.send({"type": "terminal.sync"})
    assert (await socket.receive_type("terminal.state"))["type"] == "terminal.state"


def terminal_path(terminal: Terminal) -> str:
    return f"/ws/terminals/{terminal.slug}/"


def mirror_path(session: VoiceSession) -> str:
    return f"/ws/voice/{session.pk}/"


async def open_terminal(terminal: Terminal, cookie: bytes | None = None) -> Socket:
    socket = Socket(terminal_path(terminal), cookie=cookie)
    assert await socket.connect()
    assert (await socket.receive())["type"] == "terminal.state"
    return socket


async def open_mirror(session: VoiceSession, cookie: bytes) -> Socket:
    socket = Socket(mirror_path(session), cookie=cookie)
    assert await socket.connect()
    return socket


def mirror_event(seq: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {"type": "mirror.event", "seq": seq, "direction": "received", "event": payload}


def navigate_call(call_id: str) -> dict[str, Any]:
    return {
        "type": "response.function_call_arguments.done",
        "call_id": call_id,
        "name": "navigate_gallery",
        "arguments": '{"action": "next"}',
    }


@pytest.fixture
def world(make_terminal: Callable[..., Terminal], owner: Any) -> Callable[[], Any]:
    """A terminal, an open voice session of its owner and the owner's session cookie."""

    @database_sync_to_async
    def make() -> tuple[Terminal, VoiceSession, bytes]:
        terminal = make_terminal(slug="lobby", images=3)
        session = VoiceSession.objects.create(
            user=owner, terminal=terminal, upstream="engine", model="gpt-realtime", voice="verse"
        )
        return terminal, session, cookie_for(owner)

    return make


@database_sync_to_async
def refreshed(instance: Any) -> Any:
    instance.refresh_from_db()
    return instance


# --- The token bucket ---------------------------------------------------------------------


def test_the_bucket_allows_a_burst_then_its_rate() -> None:
    now = [100.0]
    bucket = sockets.TokenBucket(rate=2, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back at 2/s
    assert [bucket.take(), bucket.take()] == [True, False]
    now[0] += 60  # refills to the burst, never beyond
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


async def test_a_terminal_socket_past_its_rate_is_closed_and_logged(
    world: Callable[[], Any], settings: Any, caplog: pytest.LogCaptureFixture, owner: Any
) -> None:
    settings.WEBSOCKET_MESSAGES_PER_SECOND = 0.01
    settings.WEBSOCKET_MESSAGE_BURST = 3
    terminal, _, cookie = await world()
    socket = await open_terminal(terminal, cookie)
    caplog.set_level(logging.WARNING, logger="artterminal.sockets")
    try:
        for _ in range(3):
            await socket.send({"type": "terminal.sync"})
            assert (await socket.receive_type("terminal.state"))["type"] == "terminal.state"
        # The fourth frame is refused before it is even parsed.
        await socket.send({"type": "terminal.navigate", "action": "next", "x": "SECRET-PAYLOAD"})
        assert await socket.receive_error_and_close() == ("rate_limited", 4429)
    finally:
        await socket.disconnect()
    assert (await refreshed(terminal)).version == 0
    [record] = [r for r in caplog.records if "messages/s" in r.getMessage()]
    assert f"user {owner.pk}" in record.getMessage()
    assert terminal_path(terminal) in record.getMessage()
    assert "SECRET-PAYLOAD" not in caplog.text


async def test_anonymous_viewers_have_a_rate_too(
    make_terminal: Callable[..., Terminal], settings: Any
) -> None:
    settings.WEBSOCKET_MESSAGES_PER_SECOND = 0.01
    settings.WEBSOCKET_MESSAGE_BURST = 2
    terminal = await database_sync_to_async(make_terminal)()
    socket = await open_terminal(terminal)
    try:
        for _ in range(2):
            await socket.communicator.send_to(text_data="not json")
            assert (await socket.receive_type("error"))["code"] == "invalid_json"
        await socket.communicator.send_to(bytes_data=b"\x00" * 10)
        assert await socket.receive_error_and_close() == ("rate_limited", 4429)
    finally:
        await socket.disconnect()


async def test_a_mirror_past_its_rate_ends_the_call(
    world: Callable[[], Any], settings: Any
) -> None:
    settings.VOICE_MIRROR_MESSAGES_PER_SECOND = 0.01
    settings.VOICE_MIRROR_MESSAGE_BURST = 2
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    try:
        for seq in (1, 2):
            await socket.send(mirror_event(seq, {"type": "session.updated"}))
            assert await socket.receive() == {"type": "mirror.ack", "seq": seq}
        await socket.send(mirror_event(3, {"type": "session.updated"}))
        assert await socket.receive_error_and_close() == ("rate_limited", 4429)
    finally:
        await socket.disconnect()
    session = await refreshed(session)
    assert (session.status, session.end_reason) == (VoiceSession.Status.ENDED, "too many messages")


# --- Sockets per user ---------------------------------------------------------------------


async def test_a_user_past_the_socket_cap_is_refused_until_one_closes(
    world: Callable[[], Any], settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.WEBSOCKET_MAX_SOCKETS_PER_USER = 2
    terminal, session, cookie = await world()
    caplog.set_level(logging.WARNING, logger="artterminal.sockets")
    mirror = await open_mirror(session, cookie)
    first = await open_terminal(terminal, cookie)
    extra_terminal = Socket(terminal_path(terminal), cookie=cookie)
    extra_mirror = Socket(mirror_path(session), cookie=cookie)
    anonymous = [Socket(terminal_path(terminal)) for _ in range(3)]
    try:
        # Accepted only to hear why, then closed; neither joins anything.
        assert await extra_terminal.connect()
        assert await extra_terminal.receive_error_and_close() == ("too_many_sockets", 4429)
        assert await extra_mirror.connect()
        assert await extra_mirror.receive_error_and_close() == ("too_many_sockets", 4429)
        assert "Refused a socket of user" in caplog.text
        # Anonymous viewers are not counted against anyone.
        for viewer in anonymous:
            assert await viewer.connect()
        # The refused mirror left the session open for a socket that fits.
        assert (await refreshed(session)).status == VoiceSession.Status.MINTED

        await first.disconnect()
        again = await open_terminal(terminal, cookie)
        await again.disconnect()
    finally:
        for socket in (mirror, first, extra_terminal, extra_mirror, *anonymous):
            await socket.disconnect()
    assert await sockets.socket_counter().count(user_id=session.user_id) == 0


async def test_a_socket_cancelled_by_the_server_gives_its_place_back(
    world: Callable[[], Any], settings: Any
) -> None:
    settings.WEBSOCKET_MAX_SOCKETS_PER_USER = 1
    terminal, _, cookie = await world()
    socket = await open_terminal(terminal, cookie)
    user_id = terminal.owner_id
    assert await sockets.socket_counter().count(user_id=user_id) == 1
    # What Daphne does to an application that outlives its close timeout.
    socket.communicator.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await socket.communicator.future
    assert await sockets.socket_counter().count(user_id=user_id) == 0
    again = await open_terminal(terminal, cookie)
    await again.disconnect()


async def test_a_socket_cancelled_by_the_server_is_no_longer_counted_as_watching(
    world: Callable[[], Any],
) -> None:
    """Daphne cancels an application that outlives its close timeout; the in-memory
    registry never expires an entry, so whatever ends the socket must uncount it, as
    `__call__`'s `finally` already gives back its place in the per-user cap."""
    terminal, _, _ = await world()
    watcher = await open_terminal(terminal)
    doomed = await open_terminal(terminal)
    try:
        assert (await watcher.receive_type("terminal.viewers"))["viewers"] == 2
        assert await presence.viewer_registry().count(terminal_id=terminal.pk) == 2
        doomed.communicator.future.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed.communicator.future
        assert await presence.viewer_registry().count(terminal_id=terminal.pk) == 1
        assert (await watcher.receive_type("terminal.viewers"))["viewers"] == 1
    finally:
        await watcher.disconnect()
    assert await presence.viewer_registry().count(terminal_id=terminal.pk) == 0


async def test_local_places_expire_unless_refreshed() -> None:
    now = [0.0]
    counter = sockets.LocalSocketCounter(clock=lambda: now[0])
    assert await counter.acquire(user_id=1, socket_id="a", cap=2, ttl=10)
    assert await counter.acquire(user_id=1, socket_id="b", cap=2, ttl=10)
    assert not await counter.acquire(user_id=1, socket_id="c", cap=2, ttl=10)
    assert await counter.acquire(user_id=1, socket_id="a", cap=2, ttl=10)  # a refresh
    now[0] = 8
    assert await counter.acquire(user_id=1, socket_id="a", cap=2, ttl=10)
    now[0] = 12  # "b" (a crashed consumer) expired; "a" lives on
    assert await counter.count(user_id=1) == 1
    assert await counter.acquire(user_id=1, socket_id="c", cap=2, ttl=10)
    await counter.release(user_id=1, socket_id="a")
    await counter.release(user_id=1, socket_id="never-held")
    assert await counter.count(user_id=1) == 1
    assert await counter.count(user_id=2) == 0


async def test_redis_places_are_shared_by_processes_and_expire(
    redis_url: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        }
    }
    assert isinstance(sockets.socket_counter(), sockets.RedisSocketCounter)
    # Two counters stand for two Daphne processes.
    one, two = sockets.RedisSocketCounter(redis_url), sockets.RedisSocketCounter(redis_url)
    assert await one.acquire(user_id=5, socket_id="p1!a", cap=2, ttl=0.8)
    assert await two.acquire(user_id=5, socket_id="p2!b", cap=2, ttl=30)
    assert not await two.acquire(user_id=5, socket_id="p2!c", cap=2, ttl=30)
    assert await two.acquire(user_id=6, socket_id="p2!d", cap=2, ttl=30)
    assert await one.count(user_id=5) == 2
    # Process one dies without releasing: its place frees itself.
    await asyncio.sleep(1.0)
    assert await two.count(user_id=5) == 1
    assert await two.acquire(user_id=5, socket_id="p2!c", cap=2, ttl=30)
    await two.release(user_id=5, socket_id="p2!b")
    assert await one.count(user_id=5) == 1


async def test_sockets_count_in_the_caches_redis_across_processes(
    redis_url: str,  # noqa: F811
    world: Callable[[], Any],
    settings: Any,
) -> None:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
        }
    }
    settings.WEBSOCKET_MAX_SOCKETS_PER_USER = 2
    settings.WEBSOCKET_SESSION_CHECK_SECONDS = 0.3  # places live 0.9 s between refreshes
    terminal, _, cookie = await world()
    # A socket of this user on another process, which then died.
    other_process = sockets.RedisSocketCounter(redis_url)
    assert await other_process.acquire(
        user_id=terminal.owner_id, socket_id="lost!1", cap=2, ttl=0.9
    )
    mine = await open_terminal(terminal, cookie)
    refused = Socket(terminal_path(terminal), cookie=cookie)
    try:
        assert await refused.connect()
        assert await refused.receive_error_and_close() == ("too_many_sockets", 4429)
        # The dead process's place expires; the live socket keeps refreshing its own.
        await asyncio.sleep(1.5)
        assert await other_process.count(user_id=terminal.owner_id) == 1
        second = await open_terminal(terminal, cookie)
        await second.disconnect()
    finally:
        await mine.disconnect()
        await refused.disconnect()
    assert await other_process.count(user_id=terminal.owner_id) == 0


# --- When the login ends ------------------------------------------------------------------


async def test_logging_out_closes_the_users_sockets(world: Callable[[], Any], owner: Any) -> None:
    terminal, session, _ = await world()
    browser = Client()
    assert await sync_to_async(browser.login)(username=owner.username, password=PASSWORD)
    value = browser.cookies[settings.SESSION_COOKIE_NAME].value
    cookie = f"{settings.SESSION_COOKIE_NAME}={value}".encode()
    watching = await open_terminal(terminal, cookie)
    mirror = await open_mirror(session, cookie)
    bystander = await open_terminal(terminal)
    try:
        response = await sync_to_async(browser.post)("/accounts/logout/")
        assert response.status_code == 302
        assert await watching.receive_close() == 4001
        assert await mirror.receive() == {"type": "session.ended", "reason": "logged out"}
        assert await mirror.receive_close() == 4000
        await assert_still_open(bystander)
    finally:
        for socket in (watching, mirror, bystander):
            await socket.disconnect()


async def test_deactivating_a_user_closes_their_sockets(
    world: Callable[[], Any], owner: Any
) -> None:
    terminal, session, cookie = await world()
    watching = await open_terminal(terminal, cookie)
    mirror = await open_mirror(session, cookie)
    try:
        owner.is_active = False
        await database_sync_to_async(owner.save)()
        assert await watching.receive_close() == 4001
        assert (await mirror.receive())["type"] == "session.ended"
        assert await mirror.receive_close() == 4000
    finally:
        await watching.disconnect()
        await mirror.disconnect()
    assert (await refreshed(session)).status == VoiceSession.Status.ENDED


def _delete_sessions() -> None:
    Session.objects.all().delete()


def _change_password(user: Any) -> None:
    user.set_password("another-long-password")
    user.save()


def _deactivate_quietly(user: Any) -> None:
    # An update() sends no signal, like a change made by another tool on the database.
    type(user).objects.filter(pk=user.pk).update(is_active=False)


LOGIN_ENDINGS = {
    "session deleted": lambda user: _delete_sessions(),
    "password changed": _change_password,
    "deactivated without a signal": _deactivate_quietly,
}


@pytest.mark.parametrize("ending", list(LOGIN_ENDINGS))
async def test_the_periodic_check_closes_sockets_whose_login_ended(
    ending: str, world: Callable[[], Any], owner: Any, settings: Any
) -> None:
    settings.WEBSOCKET_SESSION_CHECK_SECONDS = 0.2
    terminal, session, cookie = await world()
    watching = await open_terminal(terminal, cookie)
    mirror = await open_mirror(session, cookie)
    anonymous = await open_terminal(terminal)
    try:
        # Checks that pass change nothing.
        await asyncio.sleep(0.5)
        assert await mirror.receive_nothing(0.05)

        await database_sync_to_async(LOGIN_ENDINGS[ending])(owner)

        assert await watching.receive_error_and_close() == ("logged_out", 4001)
        assert await mirror.receive() == {"type": "session.ended", "reason": "signed out"}
        assert await mirror.receive_close() == 4001
        await assert_still_open(anonymous)
    finally:
        for socket in (watching, mirror, anonymous):
            await socket.disconnect()
    session = await refreshed(session)
    assert (session.status, session.end_reason) == (VoiceSession.Status.ENDED, "signed out")


async def test_a_command_after_the_session_ended_is_not_executed(world: Callable[[], Any]) -> None:
    # The periodic check is far away: the check before the command catches it.
    terminal, session, cookie = await world()
    watching = await open_terminal(terminal, cookie)
    mirror = await open_mirror(session, cookie)
    try:
        await mirror.send(mirror_event(1, navigate_call("call_before")))
        assert (await mirror.receive())["type"] == "tool.result"
        assert await mirror.receive() == {"type": "mirror.ack", "seq": 1}
        await watching.receive_type("terminal.state")

        await database_sync_to_async(_delete_sessions)()

        await watching.send({"type": "terminal.navigate", "action": "next"})
        assert await watching.receive_error_and_close() == ("logged_out", 4001)
        await mirror.send(mirror_event(2, navigate_call("call_after")))
        assert await mirror.receive() == {"type": "session.ended", "reason": "signed out"}
        assert await mirror.receive_close() == 4001
    finally:
        await watching.disconnect()
        await mirror.disconnect()
    assert (await refreshed(terminal)).version == 1
    calls = await database_sync_to_async(list)(ToolCall.objects.values_list("call_id", flat=True))
    assert calls == ["call_before"]


async def test_a_database_failure_while_checking_a_login_refuses_that_command_only(
    world: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login is read in the same trip as the navigation: the session table failing
    then ("database is locked") moves nothing and says so; the socket stays, and the
    next command goes through."""
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import OperationalError

    terminal, _, cookie = await world()
    controller = await open_terminal(terminal, cookie)
    original = SessionStore.load

    def locked(self: SessionStore) -> dict[str, Any]:
        raise OperationalError("database is locked")

    try:
        monkeypatch.setattr(SessionStore, "load", locked)
        await controller.send({"type": "terminal.navigate", "action": "next"})
        error = await controller.receive_type("error")
        assert error["code"] == "unavailable"
        assert (await refreshed(terminal)).version == 0

        monkeypatch.setattr(SessionStore, "load", original)
        await controller.send({"type": "terminal.navigate", "action": "next"})
        assert (await controller.receive_type("terminal.state"))["version"] == 1
    finally:
        await controller.disconnect()


def test_checking_a_login_never_changes_the_session(owner: Any, settings: Any) -> None:
    client = Client()
    client.force_login(owner)
    key = client.session.session_key
    assert key is not None
    before = Session.objects.get(session_key=key).session_data
    assert sockets.socket_login_holds(session_key=key, user_id=owner.pk)
    assert not sockets.socket_login_holds(session_key=key, user_id=owner.pk + 1)
    assert not sockets.socket_login_holds(session_key="no-such-session", user_id=owner.pk)

    # A rotated SECRET_KEY keeps sessions made with the old one, as HTTP does, and the
    # check does not cycle the browser's session key.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "x" * 40
    assert sockets.socket_login_holds(session_key=key, user_id=owner.pk)
    assert Session.objects.get(session_key=key).session_data == before
    settings.SECRET_KEY_FALLBACKS = []
    assert not sockets.socket_login_holds(session_key=key, user_id=owner.pk)
    assert Session.objects.filter(session_key=key).exists()


# --- The database failing under a socket ---------------------------------------------------
# A group message or a hang-up reaches a socket while PostgreSQL restarts: the socket must
# neither crash (a 1011 close, a traceback) nor keep a socket whose login is gone.

DATABASE_GONE = "server closed the connection unexpectedly"


def failing(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, *, times: int | None = None
) -> list[dict[str, Any]]:
    """Make `owner.name` raise as a lost database does, `times` times (always when None);
    returns the keyword arguments of each failed call."""
    from django.db import OperationalError

    real = getattr(owner, name)
    failed: list[dict[str, Any]] = []

    def fail(*args: Any, **kwargs: Any) -> Any:
        if times is None or len(failed) < times:
            failed.append(kwargs)
            raise OperationalError(DATABASE_GONE)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, fail)
    return failed


async def test_a_terminal_socket_opened_while_the_database_is_down_is_told_to_retry(
    world: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gallery import consumers

    terminal, _, cookie = await world()
    for step in ("_watchable_terminal", "_state_and_rights"):
        failed = failing(monkeypatch, consumers, step, times=1)
        socket = Socket(terminal_path(terminal), cookie=cookie)
        assert await socket.connect()
        assert await socket.receive_error_and_close() == ("unavailable", 4503), step
        await socket.disconnect()
        assert len(failed) == 1
    # The database is back: the page's reconnect gets the terminal.
    await open_terminal(terminal, cookie)


async def test_a_mirror_opened_while_the_database_is_down_is_told_to_retry(
    world: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gallery import selectors as gallery_selectors

    _, session, cookie = await world()
    failing(monkeypatch, gallery_selectors, "terminal_can_control", times=1)
    socket = Socket(mirror_path(session), cookie=cookie)
    assert await socket.connect()
    assert (await socket.receive())["code"] == "unavailable"
    assert await socket.receive_close() == 1000  # CLOSE_RETRY: the mirror reconnects
    await socket.disconnect()

    mirror = await open_mirror(session, cookie)
    await mirror.send(mirror_event(1, {"type": "session.created"}))
    assert await mirror.receive() == {"type": "mirror.ack", "seq": 1}
    await mirror.disconnect()


async def test_new_rights_the_database_fails_to_send_arrive_with_the_next_check(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    from gallery import consumers
    from gallery.models import TerminalMembership

    settings.WEBSOCKET_SESSION_CHECK_SECONDS = 0.3
    terminal = await database_sync_to_async(make_terminal)(is_public=False)
    member = await database_sync_to_async(make_user)()
    membership = await database_sync_to_async(add_member)(
        terminal, member, TerminalMembership.Role.VIEWER
    )
    cookie = await database_sync_to_async(cookie_for)(member)
    socket = Socket(terminal_path(terminal), cookie=cookie)
    assert await socket.connect()
    try:
        assert (await socket.receive())["can_control"] is False
        failed = failing(monkeypatch, consumers, "_state_and_rights", times=1)
        membership.role = TerminalMembership.Role.CONTROLLER
        await database_sync_to_async(membership.save)()

        # The rights were read, the state with them was not: the socket stays, and the
        # periodic check sends what the page has not seen yet.
        state = await socket.receive_type("terminal.state")
        assert state["can_control"] is True
        assert len(failed) == 1
        await socket.send({"type": "terminal.navigate", "action": "next"})
        assert (await socket.receive_type("terminal.state"))["version"] == 1
    finally:
        await socket.disconnect()


async def test_a_mirror_whose_rights_cannot_be_read_keeps_its_call(
    world: Callable[[], Any], owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every tool call checks the rights again, so a lost check ends nothing."""
    from channels.layers import get_channel_layer

    from artterminal.groups import user_group_name
    from gallery import selectors as gallery_selectors

    terminal, session, cookie = await world()
    mirror = await open_mirror(session, cookie)
    try:
        failed = failing(monkeypatch, gallery_selectors, "terminal_can_control", times=1)
        await get_channel_layer().group_send(
            user_group_name(owner.pk), {"type": "terminal.access", "terminal_id": terminal.pk}
        )
        async with asyncio.timeout(TIMEOUT):
            while not failed:  # the socket has read the message
                await asyncio.sleep(0.01)
        await mirror.send(mirror_event(1, navigate_call("call_after")))
        assert (await mirror.receive())["type"] == "tool.result"
        assert await mirror.receive() == {"type": "mirror.ack", "seq": 1}
        assert len(failed) == 1
    finally:
        await mirror.disconnect()
    assert (await refreshed(session)).status != VoiceSession.Status.ENDED
    assert (await refreshed(terminal)).version == 1


async def test_a_hang_up_the_database_cannot_record_still_ends_the_call(
    world: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from voice import services

    _, session, cookie = await world()
    mirror = await open_mirror(session, cookie)
    failed = failing(monkeypatch, services, "voice_session_end")
    await mirror.send({"type": "mirror.hangup"})
    assert await mirror.receive() == {"type": "session.ended", "reason": "hangup"}
    assert await mirror.receive_close() == 4000
    await mirror.disconnect()
    assert [call["reason"] for call in failed] == ["hangup"]
    # Left open, the session ends with the expiry of sessions that mirror nothing.
    assert (await refreshed(session)).status != VoiceSession.Status.ENDED
    assert "ends when it expires" in caplog.text


@pytest.mark.parametrize("ending", ["logged out", "signed out"])
async def test_a_login_that_ends_while_the_database_is_down_still_closes_the_mirror(
    ending: str,
    world: Callable[[], Any],
    owner: Any,
    monkeypatch: pytest.MonkeyPatch,
    settings: Any,
) -> None:
    from voice import services

    settings.WEBSOCKET_SESSION_CHECK_SECONDS = 0.2
    _, session, cookie = await world()
    mirror = await open_mirror(session, cookie)
    failed = failing(monkeypatch, services, "voice_session_end")
    if ending == "logged out":
        from gallery import broadcast

        await sync_to_async(broadcast.user_sockets_close)(user_id=owner.pk)
        code = 4000
    else:
        await database_sync_to_async(_delete_sessions)()
        code = 4001
    assert await mirror.receive() == {"type": "session.ended", "reason": ending}
    assert await mirror.receive_close() == code
    await mirror.disconnect()
    assert [call["reason"] for call in failed] == [ending]
