"""A viewer that cannot keep up: the channel layer drops what overflows its small queue,
silently and newest first. The viewer must still end on the terminal's current state:
by the page's `terminal.sync` when it sees a gap, and by the server when the newest
states were the ones lost (no later message would reveal the gap)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async

from gallery import broadcast, catch_up, services
from gallery.models import Terminal
from tests.test_sockets_hardening import (  # noqa: F401  (autouse fixtures too)
    Socket,
    fresh_counts,
    open_terminal,
    stop_relay_after_test,
)

pytestmark = pytest.mark.django_db(transaction=True)

CAPACITY = 5
BURST = 200


@pytest.fixture(autouse=True)
def small_channel_queues(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "artterminal.layers.InMemoryChannelLayer",
            "CONFIG": {"capacity": CAPACITY},
        }
    }


def _navigate_many(terminal: Terminal, user: Any, count: int) -> int:
    """A controller elsewhere (voice tool calls on another process, say) moving the
    terminal `count` times right after a change of rights. Broadcasts cost a viewer no
    database work, but a rights change makes it re-read its rights on the one database
    thread the consumers share, which this runs in: the viewer is stalled behind it and
    its queue overflows."""
    broadcast.terminal_access_changed(terminal_id=terminal.pk)
    time.sleep(0.2)  # the viewer is now waiting for the database thread
    for _ in range(count):
        terminal = services.terminal_navigate(terminal_id=terminal.pk, user=user, action="next")
    return terminal.version


navigate_many = database_sync_to_async(_navigate_many)


async def drain_states(socket: Socket, *, quiet: float) -> list[int]:
    """Versions of every state that arrives until the socket stays quiet."""
    versions = []
    while not await socket.receive_nothing(quiet):
        message = await socket.receive()
        if message["type"] == "terminal.state":
            versions.append(message["version"])
        else:
            assert message["type"] == "terminal.viewers", message
    return versions


async def sync(socket: Socket) -> int:
    await socket.send({"type": "terminal.sync"})
    return int((await socket.receive_type("terminal.state"))["version"])


async def test_a_stalled_viewer_sees_a_gap_and_sync_brings_it_current(
    make_terminal: Callable[..., Terminal], owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the server's catch-up: what the page alone has to work with.
    monkeypatch.setattr(catch_up, "QUIET_SECONDS", 60.0)
    terminal = await database_sync_to_async(make_terminal)(images=3)
    viewer = await open_terminal(terminal)
    try:
        await drain_states(viewer, quiet=0.2)

        current = await navigate_many(terminal, owner, BURST)
        arrived = await drain_states(viewer, quiet=0.5)
        # Only what fitted the queue arrived, in order; the newest states were lost and
        # nothing tells the page yet.
        assert current == BURST
        assert arrived == sorted(set(arrived))
        assert 0 < len(arrived) <= CAPACITY + 1
        assert arrived[-1] < current

        # The next change arrives after the gap: the page sees it and asks for a sync
        # (static/js/terminal.js, applyState), which answers with the current state.
        current = await navigate_many(terminal, owner, 1)
        [after] = await drain_states(viewer, quiet=0.3)
        assert after == current > arrived[-1] + 1
        assert await sync(viewer) == current == BURST + 1
    finally:
        await viewer.disconnect()


async def test_the_server_sends_the_current_state_when_the_newest_were_lost(
    make_terminal: Callable[..., Terminal], owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catch_up, "QUIET_SECONDS", 0.3)
    terminal = await database_sync_to_async(make_terminal)(images=3)
    viewer = await open_terminal(terminal)
    try:
        await drain_states(viewer, quiet=0.2)

        current = await navigate_many(terminal, owner, BURST)
        arrived = await drain_states(viewer, quiet=1.0)

        # A gap (the page will sync), and the last state is the current one without
        # waiting for another change.
        assert arrived == sorted(set(arrived))
        assert len(arrived) < current
        assert arrived[-1] == current == BURST
        assert await sync(viewer) == current

        # Once it keeps up again it gets every state, one by one, and nothing extra.
        for step in range(1, 4):
            await navigate_many(terminal, owner, 1)
            assert await drain_states(viewer, quiet=0.5) == [BURST + step]
    finally:
        await viewer.disconnect()
