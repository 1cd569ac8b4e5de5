"""The channel layer's expected failures, and surviving them.

With REDIS_URL set, every group message goes through Redis; a Redis that restarts or is
briefly unreachable is an outage to ride out, not a bug: the database already holds the
truth, and sockets re-sync from it when they reconnect. Code that talks to the layer
catches `LAYER_ERRORS` and logs a warning without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from copy import deepcopy
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer as _RedisChannelLayer

logger = logging.getLogger(__name__)


def _layer_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, ChannelFull)
    try:
        from redis.exceptions import RedisError
    except ImportError:  # the in-memory layer needs no Redis client
        return errors
    return (*errors, RedisError)


# A broadcast runs in an on_commit hook on the process's one database thread (unless its
# caller holds it for the loop, `group_sends_held`): however the layer misbehaves, it
# may hold that thread (and every socket's commands) this long.
GROUP_SEND_SECONDS = 5.0

# OSError covers refused and reset connections; RedisError the client's own
# ConnectionError, TimeoutError and a server that lost its scripts or keys.
LAYER_ERRORS: tuple[type[BaseException], ...] = _layer_errors()


def layer_failure(error: BaseException) -> str:
    """A one-line description of a layer failure, for a warning without traceback."""
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{error.__class__.__name__}: {text}" if text else error.__class__.__name__


def group_send_or_warn(group: str, message: dict[str, Any], *, logger: logging.Logger) -> bool:
    """Send to a group from synchronous code (an on_commit hook); False, with a
    warning, when the layer is down. Callers have committed already: their receivers
    read the state again when they reconnect, so nothing is retried here. Inside
    `group_sends_held` the message waits in the caller's list instead."""
    held = getattr(_held, "messages", None)
    if held is not None:
        held.append(HeldMessage(group, message, logger))
        return True
    layer = get_channel_layer()
    if layer is None:
        return True
    try:
        async_to_sync(_group_send_bounded)(layer, group, message)
    except LAYER_ERRORS as error:
        _warn(logger, group, message, error)
        return False
    return True


class HeldMessage(NamedTuple):
    group: str
    message: dict[str, Any]
    logger: logging.Logger


_held = threading.local()


@contextlib.contextmanager
def group_sends_held(into: list[HeldMessage]) -> Iterator[None]:
    """Group messages sent inside (after-commit broadcasts) wait in `into`, in order.

    For code on the database thread whose caller, on the event loop, sends them itself
    with `group_send_held` once the thread is done, in a `finally`: what committed is
    announced whatever fails after it. Sent from the thread, each message holds it
    (and every socket's database work queued behind it) until a turn of the loop has
    sent it: 4 ms a navigation with the in-memory layer, 8 ms through Redis.
    """
    previous = getattr(_held, "messages", None)
    _held.messages = into
    try:
        yield
    finally:
        _held.messages = previous


async def group_send_held(held: list[HeldMessage]) -> None:
    """Send what `group_sends_held` kept, in order; a failure is a warning, as in
    `group_send_or_warn`, and the rest are still sent."""
    layer = get_channel_layer()
    while held and layer is not None:
        group, message, logger = held.pop(0)
        try:
            await _group_send_bounded(layer, group, message)
        except LAYER_ERRORS as error:
            _warn(logger, group, message, error)


def _warn(
    logger: logging.Logger, group: str, message: dict[str, Any], error: BaseException
) -> None:
    logger.warning(
        "Could not send %s to %s: the channel layer failed (%s)",
        message.get("type", "a message"),
        group,
        layer_failure(error),
    )


async def _group_send_bounded(layer: Any, group: str, message: dict[str, Any]) -> None:
    async with asyncio.timeout(GROUP_SEND_SECONDS):
        await layer.group_send(group, message)


class RedisChannelLayer(_RedisChannelLayer):
    """channels_redis's layer, whose background cleaning survives a Redis restart.

    After each message it receives, channels_redis pops the message's backup copy in a
    task nobody awaits; with Redis gone, asyncio logs that task's error ("Task exception
    was never retrieved") with a traceback. The backup is lost with the restarted Redis
    anyway, so the failure is a warning."""

    async def _clean_receive_backup(self, index: int, channel: str) -> None:
        try:
            await super()._clean_receive_backup(index, channel)
        except LAYER_ERRORS as error:
            logger.warning("Cleaning a received message's backup failed (%s)", layer_failure(error))


class InMemoryChannelLayer(_InMemoryChannelLayer):
    """channels' in-memory layer (one process), without its quadratic fan-out.

    The stock layer sweeps every channel and every group membership for expired
    entries on every receive, builds a new queue object on every send and receive,
    and starts a task per member for a group send: with V viewers on a terminal one
    navigation costs O(V²) work on the event loop. Here the sweep runs at most once
    every SWEEP_SECONDS (messages live `expiry`, 60 s by default, so a sweep a moment
    later drops nothing that matters), queues are made only when missing, and a group
    send puts the message on each member's queue in turn. Messages are still copied
    per receiver, as the stock layer does."""

    SWEEP_SECONDS = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._swept_at = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < self.SWEEP_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()

    def _queue(self, channel: str) -> asyncio.Queue[Any]:
        queue: asyncio.Queue[Any] | None = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        try:
            self._queue(channel).put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            # An idle channel holds no queue (a closed socket's would stay forever).
            if queue.empty() and self.channels.get(channel) is queue:
                del self.channels[channel]
        return message

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            # As with the stock layer, a member that fell behind misses this one.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)
