"""The Redis pub/sub channel layer: fan-out in one PUBLISH, and every outage told.

Against a redis-server of the test's own, killed or made to drop the subscriber's
connection while receivers wait, as Redis restarting or a network cut would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest
import redis

from artterminal.layers import LAYER_ERRORS, LayerOutage, RedisPubSubChannelLayer
from tests.live import RedisServer

pytestmark = pytest.mark.timeout(60)

TOLD_WITHIN = 20.0  # redis-py retries a lost connection with backoff before giving up


def _layer(url: str, *, database: int = 0) -> Any:
    return RedisPubSubChannelLayer(
        hosts=[{"address": url, "socket_timeout": 2}], prefix=f"artterminal{database}."
    )


async def _member(layer: Any, group: str) -> str:
    channel: str = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def _nothing_for(layer: Any, channel: str, seconds: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(layer.receive(channel), seconds)
    except TimeoutError:
        return True
    return False


async def _cut_while_waiting(layer: Any, server: RedisServer, channel: str) -> redis.Redis:
    """Cut the subscriber's connection (Redis stays up) while `channel` waits for a
    message; the wait must end in LayerOutage. The admin connection is returned."""
    receive = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0.2)
    admin = redis.Redis.from_url(server.url, decode_responses=True)
    assert admin.client_kill_filter(_type="pubsub") == 1
    with pytest.raises(LayerOutage):
        await asyncio.wait_for(receive, TOLD_WITHIN)
    return admin


async def test_a_group_message_reaches_its_members_and_no_other_database(
    own_redis: RedisServer,
) -> None:
    layer, other = _layer(own_redis.url), _layer(own_redis.url, database=1)
    try:
        first, second = await _member(layer, "terminal-1"), await _member(layer, "terminal-1")
        elsewhere = await _member(layer, "terminal-2")
        other_site = await _member(other, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 1})
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 2})
        for channel in (first, second):
            got = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
            assert [m["version"] for m in got] == [1, 2]
        assert await _nothing_for(layer, elsewhere)
        assert await _nothing_for(other, other_site)
    finally:
        await layer.flush()
        await other.flush()


async def test_every_receiver_hears_of_redis_going_away_and_later_channels_work(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    layer = _layer(own_redis.url)
    try:
        waiting = await _member(layer, "terminal-1")
        idle = await _member(layer, "terminal-1")
        receive = asyncio.create_task(layer.receive(waiting))
        await asyncio.sleep(0.2)
        with caplog.at_level(logging.WARNING, logger="artterminal.layers"):
            await asyncio.to_thread(own_redis.kill)
            with pytest.raises(LayerOutage):
                await asyncio.wait_for(receive, TOLD_WITHIN)
            # A channel nobody was reading at the time hears of it on its next receive.
            with pytest.raises(LayerOutage):
                await asyncio.wait_for(layer.receive(idle), 5)
        assert issubclass(LayerOutage, LAYER_ERRORS), "the sockets' handlers catch it"
        assert any("subscription dropped" in r.getMessage() for r in caplog.records)
        assert all(r.exc_info is None for r in caplog.records), "an outage is no traceback"

        await asyncio.to_thread(own_redis.start)
        fresh = await _member(layer, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 3})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["version"] == 3
    finally:
        await layer.flush()


async def test_a_subscription_mended_by_reconnecting_is_still_an_outage(
    own_redis: RedisServer,
) -> None:
    # Redis stays up; only the subscriber's connection is cut. redis-py reconnects
    # and subscribes again by itself: whatever was published in between is gone, and
    # the receivers must hear of it as of any outage.
    layer = _layer(own_redis.url)
    try:
        waiting = await _member(layer, "terminal-1")
        admin = await _cut_while_waiting(layer, own_redis, waiting)

        fresh = await _member(layer, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 4})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["version"] == 4
        # The dropped channels' subscriptions went with their connection.
        subscribed = set(admin.pubsub_channels())
        assert waiting not in subscribed and fresh in subscribed
    finally:
        await layer.flush()


async def test_joining_a_group_with_a_channel_the_outage_dropped_is_an_outage(
    own_redis: RedisServer,
) -> None:
    # A consumer's receive hears of the outage while its connect() is still joining
    # groups: the join fails as a layer failure (which connect() answers with a
    # retry), not a RuntimeError, and leaves no member on the new connection.
    layer = _layer(own_redis.url)
    try:
        heard = await layer.new_channel()
        unheard = await layer.new_channel()
        await _cut_while_waiting(layer, own_redis, heard)
        for channel in (heard, unheard):
            with pytest.raises(LayerOutage):
                await layer.group_add("user-1", channel)
        fresh = await _member(layer, "user-1")
        await layer.group_send("user-1", {"type": "user.note", "n": 1})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["n"] == 1
        assert layer.groups == {"artterminal0.__group__user-1": {fresh}}
    finally:
        await layer.flush()


async def test_a_join_cut_short_leaves_no_member_collecting_the_groups_messages(
    own_redis: RedisServer,
) -> None:
    layer = _layer(own_redis.url)
    try:
        loop_layer = layer._get_layer()
        cut_short = await layer.new_channel()
        # As a slow publish holds the shard while a socket's join waits for it.
        async with loop_layer._shards[0]._lock:
            join = asyncio.create_task(layer.group_add("terminal-1", cut_short))
            await asyncio.sleep(0.05)
            join.cancel()
        with pytest.raises(asyncio.CancelledError):
            await join
        fresh = await _member(layer, "terminal-1")
        for version in range(20):
            await layer.group_send("terminal-1", {"type": "terminal.state", "version": version})
        for _ in range(20):
            await asyncio.wait_for(layer.receive(fresh), 5)
        assert loop_layer.channels[cut_short].empty()
        assert layer.groups == {"artterminal0.__group__terminal-1": {fresh}}

        # The feed whose join failed gives its channel up, queue and subscription.
        await layer.channel_discard(cut_short)
        admin = redis.Redis.from_url(own_redis.url, decode_responses=True)
        assert cut_short not in loop_layer.channels
        assert cut_short not in set(admin.pubsub_channels())
    finally:
        await layer.flush()


class _CuttableLink:
    """A TCP relay to Redis whose path can go dark: no bytes pass and no close
    arrives, as when a network cut or a firewall drops a connection silently. It can
    also hold what goes towards Redis for `delay` seconds, as a far or busy link does."""

    def __init__(self, port: int, *, delay: float = 0.0) -> None:
        self.port = port
        self.dark = False
        self.delay = delay
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, delay: float
        ) -> None:
            while data := await source.read(65536):
                await asyncio.sleep(delay)
                if not self.dark:
                    sink.write(data)
                    await sink.drain()
            while self.dark:
                await asyncio.sleep(0.1)
            sink.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(
                pipe(reader, upstream_writer, self.delay), pipe(upstream_reader, writer, 0.0)
            )

    def close(self) -> None:
        self.dark = False
        if self.server is not None:
            self.server.close()


async def test_a_subscriber_cut_off_without_a_word_is_an_outage(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from artterminal.layers import _WatchedShard

    monkeypatch.setattr(_WatchedShard, "PING_SECONDS", 0.5)
    monkeypatch.setattr(_WatchedShard, "ANSWER_SECONDS", 0.5)
    link = _CuttableLink(own_redis.port)
    port = await link.start()
    layer = _layer(f"redis://127.0.0.1:{port}/0")
    try:
        waiting = await _member(layer, "terminal-1")
        receive = asyncio.create_task(layer.receive(waiting))
        await asyncio.sleep(1.5)  # idle, but answering its pings: no outage
        assert not receive.done()
        link.dark = True
        admin = redis.Redis.from_url(own_redis.url, decode_responses=True)
        # Redis' end goes (its own keepalive, a restart); no word of it gets through.
        assert admin.client_kill_filter(_type="pubsub") == 1
        assert admin.publish("artterminal0.__group__terminal-1", b"lost") == 0
        with pytest.raises(LayerOutage):
            await asyncio.wait_for(receive, 5)
    finally:
        link.close()
        await asyncio.wait_for(layer.flush(), 10)


async def test_a_dropped_connection_that_fails_to_close_does_not_stop_the_receiving(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.asyncio.client import PubSub

    async def failing_close(pubsub: Any) -> None:
        raise RuntimeError("the transport is already gone")

    monkeypatch.setattr(PubSub, "aclose", failing_close)
    layer = _layer(own_redis.url)
    try:
        waiting = await _member(layer, "terminal-1")
        await _cut_while_waiting(layer, own_redis, waiting)
        fresh = await _member(layer, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 5})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["version"] == 5
    finally:
        monkeypatch.undo()
        await layer.flush()


async def test_a_reconnect_noticed_before_a_flush_is_no_outage_after_it(
    own_redis: RedisServer,
) -> None:
    layer = _layer(own_redis.url)
    try:
        await _member(layer, "terminal-1")
        shard = layer._get_layer()._shards[0]
        shard._on_reconnect(shard._watched)  # as redis-py calls it on a reconnect
        await layer.flush()  # a new connection from here on
        fresh = await _member(layer, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 6})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["version"] == 6
    finally:
        await layer.flush()


async def test_a_channel_joined_hears_what_another_process_publishes_next(
    own_redis: RedisServer,
) -> None:
    # This process's link to Redis is slow; another process publishes right after the
    # join returns. The join must not return before Redis has the subscription.
    link = _CuttableLink(own_redis.port, delay=0.3)
    port = await link.start()
    here, elsewhere = _layer(f"redis://127.0.0.1:{port}/0"), _layer(own_redis.url)
    try:
        channel = await _member(here, "terminal-1")
        await elsewhere.group_send("terminal-1", {"type": "terminal.state", "version": 7})
        assert (await asyncio.wait_for(here.receive(channel), 5))["version"] == 7
    finally:
        link.close()
        await here.flush()
        await elsewhere.flush()
