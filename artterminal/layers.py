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
from collections.abc import Awaitable, Iterator
from copy import deepcopy
from typing import Any, NamedTuple

from asgiref.sync import async_to_sync
from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer as _PubSubChannelLayer
from channels_redis.pubsub import RedisPubSubLoopLayer as _PubSubLoopLayer
from channels_redis.pubsub import RedisSingleShardConnection as _PubSubShard
from channels_redis.utils import _close_redis, _wrap_close, decode_hosts

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


class LayerOutage(ConnectionError):
    """The layer's subscription to Redis dropped: messages published meanwhile are gone."""


class _Outage(NamedTuple):
    """Queued for every receiver of the process when its subscription drops."""

    reason: str


class RedisPubSubChannelLayer(_PubSubChannelLayer):
    """channels_redis's pub/sub layer, whose receivers hear of every outage.

    Redis pub/sub hands each message to whoever subscribes to its channel at that
    moment: a group send is one PUBLISH, and each process whose sockets watch the
    terminal gets one pushed message. channels_redis's core layer makes four round
    trips per group send and three per message received (a Lua script, a blocking
    pop, a backup copy) plus a clean-up: about 15% of a process's time in a 200-viewer
    broadcast (make bench --only fanout with REDIS_URL, py-spy).

    What is published while a subscriber's connection is down is gone, and
    channels_redis's own pub/sub layer says nothing of it: redis-py reconnects and
    subscribes again by itself, and the receive loop logs a traceback and retries.
    Here a subscription that fails, or comes back on a new connection, is an outage,
    as Redis going away is for the core layer: every receiver of the process raises
    LayerOutage (a LAYER_ERRORS), its group memberships are forgotten, and later
    channels subscribe on a new connection. Terminal feeds and sockets then close with
    CLOSE_UNAVAILABLE, and the pages reconnect and read the state again.

    Pub/sub channels are not per Redis database, so the settings prefix channel names
    with the database's number.
    """

    def _get_layer(self) -> Any:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _PubSubLoop(
                *self._args, **self._kwargs, channel_layer=self
            )
            _wrap_close(self, loop)
        return layer

    def deserialize(self, message: Any) -> Any:
        if isinstance(message, _Outage):
            raise LayerOutage(message.reason)
        return super().deserialize(message)


class _PubSubLoop(_PubSubLoopLayer):
    """One event loop's channels and groups, on shards that report their outages."""

    def __init__(self, hosts: Any = None, **kwargs: Any) -> None:
        super().__init__(hosts, **kwargs)
        self._shards = [_WatchedShard(host, self) for host in decode_hosts(hosts)]
        # The channels alive at the last outage. Each has heard of it or will on its
        # next receive: one joining a group now would join on the new connection and
        # collect the group's messages for a receiver that is going away.
        self._dropped: set[str] = set()

    async def _subscribe_to_channel(self, channel: str) -> None:
        try:
            await super()._subscribe_to_channel(channel)
        except BaseException:
            self.channels.pop(channel, None)  # no queue for a channel never subscribed
            raise

    async def receive(self, channel: str) -> Any:
        try:
            return await super().receive(channel)
        except LayerOutage:
            # The outage is the channel's last message: it was not subscribed again.
            self.channels.pop(channel, None)
            raise

    async def group_add(self, group: str, channel: str) -> None:
        if channel in self._dropped:
            # As for every other use of a channel the outage dropped (the consumer's
            # connect() may still be joining groups when its receive hears of it).
            raise LayerOutage("the channel was dropped with the layer's subscription")
        group_channel = self._get_group_channel_name(group)
        was_member = channel in self.groups.get(group_channel, ())
        try:
            await super().group_add(group, channel)
        except BaseException:
            # A join cut short (cancelled while a publish holds the shard, or Redis
            # failing) leaves no member behind to collect the group's messages.
            members = self.groups.get(group_channel)
            if not was_member and members is not None:
                members.discard(channel)
                if not members:
                    del self.groups[group_channel]
            raise

    async def channel_discard(self, channel: str) -> None:
        """Forget a channel nobody will receive on (a feed whose join failed)."""
        if self.channels.pop(channel, None) is not None:
            for members in self.groups.values():
                members.discard(channel)
            with contextlib.suppress(*LAYER_ERRORS):
                await self._get_shard(channel).unsubscribe(channel)

    def outage(self, reason: str) -> None:
        """Every channel of this loop hears of the outage, waiting on it or not."""
        for queue in self.channels.values():
            queue.put_nowait(_Outage(reason))
        self._dropped = set(self.channels)
        self.groups: dict[str, set[str]] = {}


# What redis-py's get_message returns for a message published to a channel.
_PUBLISHED = frozenset({"message", "pmessage"})


class _WatchedShard(_PubSubShard):
    """A shard whose subscriber connection, once it fails or reconnects, is dropped
    and its receivers told, instead of being mended in silence.

    A connection can also die without a word (a network cut, a firewall forgetting an
    idle flow): nothing arrives and nothing fails, and redis-py's health check sends a
    PING without waiting for its answer. So with nothing heard for PING_SECONDS the
    shard pings, and no answer within ANSWER_SECONDS is an outage.

    A subscription counts from Redis' confirmation of it, not from the SUBSCRIBE being
    written: another process's PUBLISH read first would be lost to a channel that
    believes it is listening (a feed reads the terminal's state once it has joined).
    """

    PING_SECONDS = 5.0
    ANSWER_SECONDS = 5.0

    def __init__(self, host: Any, channel_layer: _PubSubLoop) -> None:
        super().__init__(host, channel_layer)
        # As the base class sets them, typed: the connection, its subscriber, its names.
        self._redis: Any = None
        self._pubsub: Any = None
        self._subscribed_to: set[str] = set()
        self._watched: Any = None
        self._reconnected = False
        # Subscriptions sent and not yet confirmed, by channel.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._subscribing = asyncio.Event()  # wakes the receive loop for a confirmation

    async def subscribe(self, channel: str) -> None:
        async with self._lock:
            confirmed = self._confirmations.get(channel)
            if channel not in self._subscribed_to:
                self._ensure_redis()
                self._ensure_receiver()
                if confirmed is None:
                    confirmed = asyncio.get_running_loop().create_future()
                    self._confirmations[channel] = confirmed
                await self._pubsub.subscribe(channel)
                self._subscribed_to.add(channel)
                self._subscribing.set()
                connection = self._pubsub.connection
                if connection is not None and connection is not self._watched:
                    # Called on connects after the first: redis-py subscribed it again.
                    connection.register_connect_callback(self._on_reconnect)
                    self._watched = connection
        if confirmed is None:
            return
        try:
            async with asyncio.timeout(self.ANSWER_SECONDS):
                await asyncio.shield(confirmed)
        except TimeoutError:
            raise LayerOutage(
                f"Redis did not confirm a subscription within {self.ANSWER_SECONDS:g} s"
            ) from None

    def _confirm(self, message: dict[str, Any]) -> None:
        name = message["channel"]
        name = name.decode() if isinstance(name, bytes) else name
        confirmed = self._confirmations.pop(name, None)
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def _fail_confirmations(self, reason: str) -> None:
        pending, self._confirmations = self._confirmations, {}
        for confirmed in pending.values():
            if not confirmed.done():
                confirmed.set_exception(LayerOutage(reason))
                confirmed.exception()  # retrieved: each waiter raises it itself

    def _on_reconnect(self, connection: Any) -> None:
        self._reconnected = True

    async def _do_receiving(self) -> None:
        watched: Any = None  # the subscriber connection the timings below are about
        heard, pinged = 0.0, None
        while True:
            pubsub = self._pubsub
            if pubsub is None or not pubsub.subscribed:
                self._subscribing.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._subscribing.wait(), 0.1)
                continue
            if pubsub is not watched:
                watched, heard, pinged = pubsub, time.monotonic(), None
            try:
                message = await pubsub.get_message(timeout=0.1)
                now = time.monotonic()
                if message is not None:
                    heard, pinged = now, None
                elif pinged is not None and now - pinged > self.ANSWER_SECONDS:
                    await self._start_over(
                        f"Redis did not answer a PING within {self.ANSWER_SECONDS:g} s"
                    )
                    continue
                elif pinged is None and now - heard > self.PING_SECONDS:
                    # Sent as redis-py's own health check sends it: one write, no lock.
                    await pubsub.ping()
                    pinged = now
            except LAYER_ERRORS as error:
                await self._start_over(layer_failure(error))
                continue
            except Exception as error:
                # Not an outage we know, but messages may be lost all the same.
                logger.exception("The channel layer's Redis subscription failed")
                await self._start_over(layer_failure(error))
                continue
            if self._reconnected:
                await self._start_over("the subscription reconnected")
                continue
            if message is None:
                continue
            if message["type"] in _PUBLISHED:
                self._receive_message(message)
            elif message["type"] == "subscribe":
                self._confirm(message)

    async def _start_over(self, reason: str) -> None:
        async with self._lock:
            redis, pubsub = self._redis, self._pubsub
            self._redis = self._pubsub = None
            self._subscribed_to = set()
            self._watched, self._reconnected = None, False
            self._fail_confirmations(reason)
        logger.warning("The channel layer's Redis subscription dropped (%s)", reason)
        self.channel_layer.outage(reason)
        if pubsub is not None:
            await _close_quietly(pubsub.aclose())
        if redis is not None:
            await _close_quietly(_close_redis(redis))

    async def flush(self) -> None:
        await super().flush()
        self._watched, self._reconnected = None, False
        self._fail_confirmations("the channel layer was flushed")


async def _close_quietly(closing: Awaitable[Any]) -> None:
    """Closing a connection that failed may fail in any way; never past here, so one
    close cannot skip the next, nor end the receive loop later channels wait on."""
    try:
        await closing
    except Exception as error:
        logger.debug("Closing a dropped Redis connection failed: %s", layer_failure(error))


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

    async def channel_discard(self, channel: str) -> None:
        """Forget a channel nobody will receive on (as the pub/sub layer's)."""
        self.channels.pop(channel, None)
        for members in self.groups.values():
            members.pop(channel, None)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            # As with the stock layer, a member that fell behind misses this one.
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)
