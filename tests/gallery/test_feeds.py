"""A terminal's sockets in one process share one member of its group (gallery.feeds)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from artterminal.groups import terminal_group_name
from artterminal.layers import RedisPubSubChannelLayer
from artterminal.sockets import CLOSE_UNAVAILABLE
from gallery import services
from gallery.feeds import TerminalFeed, feeds
from gallery.models import Terminal
from tests.test_sockets_hardening import (  # noqa: F401  (autouse fixtures too)
    Socket,
    cookie_for,
    fresh_counts,
    open_terminal,
    stop_relay_after_test,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _members(terminal: Terminal) -> list[str]:
    layer: Any = get_channel_layer()
    return list(layer.groups.get(terminal_group_name(terminal.pk), {}))


async def test_many_viewers_are_one_group_member_and_all_see_each_state(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=4)
    viewers = [await open_terminal(terminal) for _ in range(6)]
    try:
        assert len(_members(terminal)) == 1
        assert feeds().members(terminal.pk) == 6
        for _ in range(3):
            await database_sync_to_async(services.terminal_navigate)(
                terminal_id=terminal.pk,
                user=owner,
                action="next",
            )
        for viewer in viewers:
            versions = [(await viewer.receive_type("terminal.state"))["version"] for _ in range(3)]
            assert versions == [1, 2, 3]  # every state, in order
    finally:
        for viewer in viewers:
            await viewer.disconnect()
    # The last socket to leave takes the process's member out of the group.
    assert _members(terminal) == []
    assert feeds().members(terminal.pk) == 0


async def test_sockets_joining_at_once_share_one_feed(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=2)

    async def open_one() -> Socket:
        # Another socket's viewer count may come before this one's own first state.
        socket = Socket(f"/ws/terminals/{terminal.slug}/")
        assert await socket.connect()
        await socket.receive_type("terminal.state")
        return socket

    viewers = await asyncio.gather(*(open_one() for _ in range(5)))
    try:
        assert len(_members(terminal)) == 1
        assert feeds().members(terminal.pk) == 5
    finally:
        for viewer in viewers:
            await viewer.disconnect()


async def test_a_layer_failing_under_the_feed_closes_its_sockets_to_reconnect(
    make_terminal: Callable[..., Terminal], monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=2)
    viewers = [await open_terminal(terminal) for _ in range(3)]
    layer: Any = get_channel_layer()
    [channel] = _members(terminal)
    original = layer.receive

    async def receive(name: str) -> dict[str, Any]:
        if name == channel:
            raise ConnectionError("the channel layer went away")
        return await original(name)

    monkeypatch.setattr(layer, "receive", receive)
    # Wake the feed: its next receive fails.
    await layer.send(channel, {"type": "terminal.viewers", "viewers": 3})
    for viewer in viewers:
        assert await viewer.receive_close() == CLOSE_UNAVAILABLE
    assert feeds().members(terminal.pk) == 0
    monkeypatch.setattr(layer, "receive", original)

    # The page reconnects into a new feed.
    again = await open_terminal(terminal)
    try:
        assert len(_members(terminal)) == 1
        assert feeds().members(terminal.pk) == 1
    finally:
        await again.disconnect()


async def test_a_state_arriving_during_the_handshake_waits_for_it(
    make_terminal: Callable[..., Terminal], owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The feed runs beside the socket's own task: a state broadcast after the socket
    joined the feed but before its handshake was accepted is sent after the accept."""
    terminal = await database_sync_to_async(make_terminal)(images=3)
    watcher = await open_terminal(terminal)  # the feed exists: joining it is immediate
    layer: Any = get_channel_layer()
    original = layer.group_add

    async def group_add(group: str, channel: str) -> None:
        if group.startswith("user"):  # the owner's socket, between feed and accept
            await database_sync_to_async(services.terminal_navigate)(
                terminal_id=terminal.pk,
                user=owner,
                action="next",
            )
            await watcher.receive_type("terminal.state")  # the feed has handed it over
        await original(group, channel)

    cookie = await database_sync_to_async(cookie_for)(owner)
    monkeypatch.setattr(layer, "group_add", group_add)
    controller = Socket(f"/ws/terminals/{terminal.slug}/", cookie=cookie)
    try:
        assert await controller.connect()
        versions = []
        while not await controller.receive_nothing(0.5):
            message = await controller.receive()
            if message["type"] == "terminal.state":
                versions.append(message["version"])
        assert versions and versions[-1] == 1
        assert versions == sorted(versions)
    finally:
        await controller.disconnect()
        await watcher.disconnect()


async def test_a_socket_closing_as_a_message_reaches_it_is_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A send that races the browser's close handshake: Daphne raises autobahn's
    Disconnected; the socket's disconnect is on its way, nothing is wrong."""
    from autobahn.exception import Disconnected

    from gallery.consumers import TerminalConsumer

    async def closed(message: dict[str, Any]) -> None:
        raise Disconnected("Attempt to send on a closed protocol")

    socket = TerminalConsumer()
    socket.base_send = closed
    socket.terminal_id, socket.early = 1, None
    socket.sent_version = 4  # it has its state, so a count is sent
    with caplog.at_level("DEBUG", logger="gallery.consumers"):
        await socket.deliver({"type": "terminal.viewers", "viewers": 3})
    assert [r.levelname for r in caplog.records] == ["DEBUG"]


async def test_a_broadcast_to_many_sockets_lets_the_loop_breathe_and_keeps_order() -> None:
    """Handing a state to hundreds of sockets is hundreds of sends: the feed hands the
    loop back every HAND_OVER_EVERY sockets, so the writes already made go out and
    other work (a database result, another terminal) does not wait for the whole
    burst; each socket still gets every message in order."""
    layer: Any = get_channel_layer()
    timeline: list[str] = []

    class Recorder:
        def __init__(self, name: str) -> None:
            self.name = name
            self.versions: list[int] = []

        async def deliver(self, message: dict[str, Any]) -> None:
            self.versions.append(message["version"])
            timeline.append(self.name)

        async def feed_lost(self, error: BaseException) -> None:
            raise AssertionError(error)

    sockets = [Recorder(f"socket-{n}") for n in range(200)]  # as many as the bench
    for socket in sockets:
        await feeds().join(terminal_id=9999, socket=socket)
    try:

        async def other_work() -> None:
            timeline.append("other work")

        for version in (1, 2):
            await layer.group_send(
                terminal_group_name(9999), {"type": "terminal.progress", "version": version}
            )
        await asyncio.sleep(0)  # the feed wakes and starts handing out version 1
        other = asyncio.create_task(other_work())
        for _ in range(100):
            if all(socket.versions == [1, 2] for socket in sockets):
                break
            await asyncio.sleep(0.01)
        await other
        assert all(socket.versions == [1, 2] for socket in sockets)
        # The other task ran while the first burst was still being handed out.
        assert 0 < timeline.index("other work") < len(sockets)
    finally:
        for socket in sockets:
            await feeds().leave(terminal_id=9999, socket=socket)


async def test_a_feed_whose_join_fails_gives_its_channel_up(
    own_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through Redis a channel nobody receives on keeps its queue and subscription.
    layer = RedisPubSubChannelLayer(hosts=[{"address": own_redis.url}], prefix="artterminal0.")
    loop_layer = layer._get_layer()

    async def group_add(group: str, channel: str) -> None:
        raise ConnectionError("the channel layer went away")

    monkeypatch.setattr(loop_layer, "group_add", group_add)
    feed = TerminalFeed(layer, terminal_id=1)
    try:
        with pytest.raises(ConnectionError):
            await feed.start()
        assert feed.channel
        assert feed.channel not in loop_layer.channels
    finally:
        await layer.flush()
