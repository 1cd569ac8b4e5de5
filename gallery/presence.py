"""How many sockets watch each terminal.

One process counts in memory. With REDIS_URL set (several Daphne processes), each socket
is a member of a Redis sorted set scored by its expiry, refreshed while it lives: a
process that dies without saying goodbye leaves entries that simply expire, so the
count heals by itself and can never go negative.

Viewers hear the count through the terminal's group. A process announces it at most
once per ANNOUNCE_SECONDS for each terminal, with the count as it stands then: a room
of 200 opening the page at once is a handful of announcements, not one per arrival to
every viewer (40 000 messages).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import defaultdict
from typing import Final, Protocol

from channels.layers import get_channel_layer
from django.conf import settings

from artterminal.groups import terminal_group_name
from artterminal.layers import LAYER_ERRORS, layer_failure
from artterminal.loops import per_loop
from gallery.events import terminal_viewers_message

logger = logging.getLogger(__name__)

# A socket missing this many seconds of refreshes counts as gone.
PRESENCE_TTL_SECONDS: Final = 60.0
REFRESH_SECONDS: Final = PRESENCE_TTL_SECONDS / 3
# How long a process gathers arrivals and departures before it announces the count.
ANNOUNCE_SECONDS: Final = 0.2


class ViewerRegistry(Protocol):
    """Sockets per terminal. Every method returns the terminal's count afterwards."""

    # How often a live socket must call `refresh`; None when entries never expire.
    refresh_seconds: float | None

    async def join(self, *, terminal_id: int, channel_name: str) -> int: ...

    async def refresh(self, *, terminal_id: int, channel_name: str) -> int: ...

    async def leave(self, *, terminal_id: int, channel_name: str) -> int: ...

    async def count(self, *, terminal_id: int) -> int: ...


class LocalViewers:
    """This process's sockets; they die with it, so nothing needs to expire."""

    refresh_seconds: float | None = None

    def __init__(self) -> None:
        self._channels: defaultdict[int, set[str]] = defaultdict(set)

    async def join(self, *, terminal_id: int, channel_name: str) -> int:
        self._channels[terminal_id].add(channel_name)
        return len(self._channels[terminal_id])

    async def refresh(self, *, terminal_id: int, channel_name: str) -> int:
        return await self.join(terminal_id=terminal_id, channel_name=channel_name)

    async def leave(self, *, terminal_id: int, channel_name: str) -> int:
        channels = self._channels.get(terminal_id)
        if channels is None:
            return 0
        channels.discard(channel_name)
        if not channels:
            del self._channels[terminal_id]
            return 0
        return len(channels)

    async def count(self, *, terminal_id: int) -> int:
        channels = self._channels.get(terminal_id)
        return len(channels) if channels else 0


# One round trip, atomic, on Redis's own clock so the processes' clocks need not agree.
_PRESENCE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == 'add' then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
elseif ARGV[3] == 'remove' then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
"""


class RedisViewers:
    """Sockets of every process, shared through Redis."""

    def __init__(
        self, url: str, *, ttl_seconds: float = PRESENCE_TTL_SECONDS, prefix: str = "presence"
    ) -> None:
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.refresh_seconds: float | None = ttl_seconds / 3
        self.prefix = prefix
        # A Redis connection belongs to the event loop that opened it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, object] = (
            weakref.WeakKeyDictionary()
        )

    async def join(self, *, terminal_id: int, channel_name: str) -> int:
        return await self._run(terminal_id, channel_name, "add")

    async def refresh(self, *, terminal_id: int, channel_name: str) -> int:
        return await self._run(terminal_id, channel_name, "add")

    async def leave(self, *, terminal_id: int, channel_name: str) -> int:
        return await self._run(terminal_id, channel_name, "remove")

    async def count(self, *, terminal_id: int) -> int:
        return await self._run(terminal_id, "", "count")

    async def _run(self, terminal_id: int, member: str, operation: str) -> int:
        from redis.asyncio import Redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if not isinstance(client, Redis):
            client = Redis.from_url(self.url)
            self._clients[loop] = client
        key = f"{self.prefix}:terminal:{int(terminal_id)}"
        result = await client.eval(
            _PRESENCE_SCRIPT, 1, key, member, str(self.ttl_seconds), operation
        )
        return int(result)


_registry: ViewerRegistry | None = None


def viewer_registry() -> ViewerRegistry:
    """The process's registry: Redis when configured, memory otherwise."""
    global _registry
    if _registry is None:
        _registry = RedisViewers(settings.REDIS_URL) if settings.REDIS_URL else LocalViewers()
    return _registry


class CountAnnouncer:
    """Announces terminals' viewer counts to their groups, for this event loop."""

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Task[None]] = {}

    def changed(self, *, terminal_id: int) -> None:
        """A socket of the terminal arrived or left here: announce the count soon."""
        if terminal_id not in self._pending:
            self._pending[terminal_id] = asyncio.create_task(self._announce(terminal_id))

    async def _announce(self, terminal_id: int) -> None:
        await asyncio.sleep(ANNOUNCE_SECONDS)
        # Forgotten before the count is read: a change from here on announces again.
        del self._pending[terminal_id]
        try:
            viewers = await viewer_registry().count(terminal_id=terminal_id)
            layer = get_channel_layer()
            assert layer is not None, "the site always has a channel layer"
            await layer.group_send(
                terminal_group_name(terminal_id), terminal_viewers_message(viewers)
            )
        except LAYER_ERRORS as error:
            # The sockets' presence refreshes pick the count up (a shared registry).
            logger.warning(
                "Announcing the viewers of terminal %s failed (%s)",
                terminal_id,
                layer_failure(error),
            )


count_announcer = per_loop(CountAnnouncer)
