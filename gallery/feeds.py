"""One channel-layer subscription per terminal and process, shared by its sockets.

With every socket in its terminal's group, one navigation is one channel-layer message
per viewer: with Redis a write per viewer, in one process a queue, a task wake-up and a
dispatch per viewer. Here a process joins a terminal's group once, however many of its
sockets watch that terminal (a *feed*), receives each group message once, and hands it
to each of those sockets in turn.

A feed hands a message to one socket after another and awaits each: a socket's messages
keep their order, and one whose handler awaits (re-reading its rights after an access
change) holds the terminal's later messages until it is done, so a viewer whose access
was revoked is never sent a state it may no longer see. Handlers therefore do little
more than send. A channel layer that fails under a feed (Redis restarting empty forgets
its groups) ends it: its sockets are told, close with CLOSE_UNAVAILABLE, and the pages
reconnect into a new feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from artterminal.groups import terminal_group_name
from artterminal.layers import LAYER_ERRORS, layer_failure
from artterminal.loops import per_loop
from gallery.catch_up import catch_up

logger = logging.getLogger(__name__)

# Layers may forget a group member after their group_expiry (a day in memory): a
# feed living that long joins again well before.
REJOIN_SECONDS = 3600.0
# A message is handed to this many sockets at a time, then the loop has a turn: Daphne
# writes a send out on a later turn, and the database thread's results wait for one too.
# Handing a state to 200 sockets in one turn made both wait for the whole burst.
HAND_OVER_EVERY = 25


class FeedSocket(Protocol):
    """A terminal socket as its feed sees it."""

    async def deliver(self, message: dict[str, Any]) -> None:
        """Handle one of the terminal's group messages."""
        ...

    async def feed_lost(self, error: BaseException) -> None:
        """The channel layer failed under the feed: close so the page reconnects."""
        ...


class TerminalFeed:
    """The sockets of one terminal in this process, and the group member they share."""

    def __init__(self, layer: Any, terminal_id: int) -> None:
        self.layer = layer
        self.terminal_id = terminal_id
        self.group = terminal_group_name(terminal_id)
        self.sockets: dict[FeedSocket, None] = {}  # an ordered set
        self.channel = ""
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Join the group; once this returns, every message sent to it is received."""
        try:
            self.channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, self.channel)
        except BaseException as error:
            self.started.set_exception(error)
            self.started.exception()  # retrieved: joiners re-raise it themselves
            # Nobody will receive on the channel: the Redis layer would keep its queue
            # and subscription for good.
            if self.channel:
                await self.layer.channel_discard(self.channel)
            raise
        self._tasks = [
            asyncio.create_task(self._receive()),
            asyncio.create_task(self._keep_joined()),
        ]
        self.started.set_result(None)

    async def stop(self) -> None:
        """Leave the group (the last socket is gone, or the layer failed)."""
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.channel:
            try:
                await self.layer.group_discard(self.group, self.channel)
            except LAYER_ERRORS as error:
                # The membership expires with the layer's group_expiry.
                logger.warning("Leaving %s failed (%s)", self.group, layer_failure(error))

    async def _receive(self) -> None:
        while True:
            try:
                message = await self.layer.receive(self.channel)
            except LAYER_ERRORS as error:
                await self._fail(error)
                return
            for index, socket in enumerate(list(self.sockets)):
                if index and not index % HAND_OVER_EVERY:
                    await asyncio.sleep(0)
                try:
                    await socket.deliver(message)
                except Exception:
                    # One socket's failure is its own: the others still get the message.
                    logger.exception(
                        "Terminal %s: a socket failed on %s", self.terminal_id, message["type"]
                    )
            if message["type"] == "terminal.state":
                # Once for the process rather than once per socket: the bookkeeping
                # was 5% of a 200-viewer broadcast (make bench --only fanout, py-spy).
                catch_up().state_seen(terminal_id=self.terminal_id)

    async def _keep_joined(self) -> None:
        while True:
            await asyncio.sleep(REJOIN_SECONDS)
            try:
                await self.layer.group_add(self.group, self.channel)
            except LAYER_ERRORS as error:
                await self._fail(error)
                return

    async def _fail(self, error: BaseException) -> None:
        logger.warning(
            "Terminal %s: its feed lost the channel layer (%s); its %d sockets reconnect",
            self.terminal_id,
            layer_failure(error),
            len(self.sockets),
        )
        feeds().forget(self)
        sockets = list(self.sockets)
        self.sockets.clear()
        await self.stop()
        for socket in sockets:
            await socket.feed_lost(error)


class TerminalFeeds:
    """This event loop's feeds, by terminal."""

    def __init__(self) -> None:
        self._feeds: dict[int, TerminalFeed] = {}

    async def join(self, *, terminal_id: int, socket: FeedSocket) -> None:
        """Start handing `socket` its terminal's group messages; once this returns, it
        gets every message sent after. Raises the layer's error when it cannot join."""
        feed = self._feeds.get(terminal_id)
        if feed is None:
            layer = get_channel_layer()
            assert layer is not None, "the site always has a channel layer"
            feed = self._feeds[terminal_id] = TerminalFeed(layer, terminal_id)
            try:
                await feed.start()
            except BaseException:
                self.forget(feed)
                raise
        else:
            await asyncio.shield(feed.started)
        if self._feeds.get(terminal_id) is not feed:  # it failed while this one waited
            await self.join(terminal_id=terminal_id, socket=socket)
            return
        feed.sockets[socket] = None

    async def leave(self, *, terminal_id: int, socket: FeedSocket) -> None:
        """Stop handing `socket` messages; the terminal's last socket ends its feed."""
        feed = self._feeds.get(terminal_id)
        if feed is None or socket not in feed.sockets:
            return
        del feed.sockets[socket]
        if not feed.sockets and feed.started.done():
            self.forget(feed)
            await feed.stop()

    def forget(self, feed: TerminalFeed) -> None:
        if self._feeds.get(feed.terminal_id) is feed:
            del self._feeds[feed.terminal_id]

    def members(self, terminal_id: int) -> int:
        feed = self._feeds.get(terminal_id)
        return 0 if feed is None else len(feed.sockets)


# This event loop's feeds (their tasks and channels belong to the loop they run on).
feeds = per_loop(TerminalFeeds)
