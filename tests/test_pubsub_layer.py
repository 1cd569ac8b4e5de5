"""The Redis pub/sub channel layer: fan-out in one PUBLISH, and every outage told.

Against a redis-server of the test's own, killed or made to drop the subscriber's
connection while receivers wait, as Redis restarting or a network cut would.
"""

from __future__ import annotations

import asyncio
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
        receive = asyncio.create_task(layer.receive(waiting))
        await asyncio.sleep(0.2)
        admin = redis.Redis.from_url(own_redis.url, decode_responses=True)
        assert admin.client_kill_filter(_type="pubsub") == 1
        with pytest.raises(LayerOutage):
            await asyncio.wait_for(receive, TOLD_WITHIN)

        fresh = await _member(layer, "terminal-1")
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": 4})
        assert (await asyncio.wait_for(layer.receive(fresh), 5))["version"] == 4
        # The dropped channels' subscriptions went with their connection.
        subscribed = set(admin.pubsub_channels())
        assert waiting not in subscribed and fresh in subscribed
    finally:
        await layer.flush()
