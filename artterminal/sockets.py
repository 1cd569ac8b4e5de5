"""Limits every websocket of the site shares, whatever it carries.

- A token bucket per socket: a browser may send so many messages a second (with a burst
  above that); past it the socket closes with `CLOSE_TOO_MANY`.
- A cap on one user's open sockets, counted across processes in the Redis behind
  Django's cache when there is one, in this process otherwise. Each socket's entry
  expires unless refreshed, so a crashed process or consumer cannot leak places.
- The login behind a long-lived socket is re-checked (periodically and before commands):
  the session still exists, still names the same user, the user is still active and the
  password has not changed since. Otherwise the socket closes with `CLOSE_LOGIN_GONE`.

Consumers own one `SocketGuard` each and call it from connect, receive and when they end.
The signal receivers at the end close a user's sockets at once on logout or deactivation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any, Final, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
)
from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.utils.crypto import constant_time_compare

from artterminal.layers import LAYER_ERRORS, layer_failure

logger = logging.getLogger(__name__)

# 4000–4999 are the application's; these mirror HTTP's 429, 401 and 503 for people
# reading logs. (Daphne can send no other code below 3000 than 1000.)
CLOSE_TOO_MANY: Final = 4429
CLOSE_LOGIN_GONE: Final = 4001
# The channel layer failed under the socket (Redis restarting): reconnect with backoff.
CLOSE_UNAVAILABLE: Final = 4503

REDIS_CACHE_BACKEND: Final = "django.core.cache.backends.redis.RedisCache"
# A socket's place in the per-user count lives this many check intervals without a refresh.
TTL_INTERVALS: Final = 3


class TokenBucket:
    """`rate` tokens a second up to `burst`; each message takes one."""

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.updated = clock()

    def take(self) -> bool:
        """Spend one token; False when the bucket is empty (the message is refused)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# --- Sockets per user ---------------------------------------------------------------------


class SocketCounter(Protocol):
    """Open sockets per user; every entry expires `ttl` seconds after its last refresh."""

    async def acquire(self, *, user_id: int, socket_id: str, cap: int, ttl: float) -> bool:
        """Take a place (or refresh one already held); False when the user is at `cap`."""
        ...

    async def release(self, *, user_id: int, socket_id: str) -> None: ...

    async def count(self, *, user_id: int) -> int: ...


class LocalSocketCounter:
    """This process's sockets. Entries expire too: a consumer that crashed never said
    goodbye."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._expiry: dict[int, dict[str, float]] = {}

    async def acquire(self, *, user_id: int, socket_id: str, cap: int, ttl: float) -> bool:
        sockets = self._live(user_id)
        if socket_id not in sockets and len(sockets) >= cap:
            return False
        sockets[socket_id] = self.clock() + ttl
        self._expiry[user_id] = sockets
        return True

    async def release(self, *, user_id: int, socket_id: str) -> None:
        sockets = self._live(user_id)
        sockets.pop(socket_id, None)
        if sockets:
            self._expiry[user_id] = sockets
        else:
            self._expiry.pop(user_id, None)

    async def count(self, *, user_id: int) -> int:
        return len(self._live(user_id))

    def _live(self, user_id: int) -> dict[str, float]:
        now = self.clock()
        return {s: t for s, t in self._expiry.get(user_id, {}).items() if t > now}


# One atomic round trip on Redis's clock (the processes' clocks need not agree): drop
# expired members, then add or refresh this one unless the set is full.
_ACQUIRE_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cap = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(ttl) + 1)
return 1
"""
_COUNT_SCRIPT: Final = """
local t = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1000000)
return redis.call('ZCARD', KEYS[1])
"""


class RedisSocketCounter:
    """Sockets of every process, in the cache's Redis under the cache's key prefix."""

    def __init__(self, url: str) -> None:
        self.url = url
        # A Redis connection belongs to the event loop that opened it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    async def acquire(self, *, user_id: int, socket_id: str, cap: int, ttl: float) -> bool:
        client = self._client()
        result = await client.eval(_ACQUIRE_SCRIPT, 1, _user_key(user_id), socket_id, cap, ttl)
        return bool(int(result))

    async def release(self, *, user_id: int, socket_id: str) -> None:
        await self._client().zrem(_user_key(user_id), socket_id)

    async def count(self, *, user_id: int) -> int:
        return int(await self._client().eval(_COUNT_SCRIPT, 1, _user_key(user_id)))

    def _client(self) -> Any:
        from redis.asyncio import Redis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Redis.from_url(self.url)
            self._clients[loop] = client
        return client


def _user_key(user_id: int) -> str:
    return cache.make_key(f"sockets:user:{int(user_id)}")


_counters: dict[str, SocketCounter] = {}


def socket_counter() -> SocketCounter:
    """Redis when Django's cache is Redis (shared by every process), memory otherwise."""
    url = _cache_redis_url()
    counter = _counters.get(url)
    if counter is None:
        counter = RedisSocketCounter(url) if url else LocalSocketCounter()
        _counters[url] = counter
    return counter


def _cache_redis_url() -> str:
    config = settings.CACHES.get("default", {})
    if config.get("BACKEND") != REDIS_CACHE_BACKEND:
        return ""
    location = config.get("LOCATION", "")
    if isinstance(location, str):
        location = location.split(",")
    # Django's RedisCache writes to the first server; the count must live where writes go.
    return str(location[0]).strip() if location else ""


# --- The login behind a socket ------------------------------------------------------------


def socket_login_holds(*, session_key: str, user_id: int) -> bool:
    """Whether the session a socket connected with still logs in that same, active user.

    Reads a fresh copy of the session and never writes it: a socket must not log its
    browser out (Django's own `get_user` may flush or cycle the session it checks).
    """
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=session_key)
    stored_id, backend_path = session.get(SESSION_KEY), session.get(BACKEND_SESSION_KEY)
    if stored_id is None or str(stored_id) != str(user_id):
        return False
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = load_backend(str(backend_path)).get_user(user_id)
    if user is None or not getattr(user, "is_active", False):
        return False
    session_hash = session.get(HASH_SESSION_KEY)
    if not session_hash:
        return False
    if constant_time_compare(session_hash, user.get_session_auth_hash()):
        return True
    # A hash made with a retired SECRET_KEY still counts, as it does for HTTP requests.
    return any(
        constant_time_compare(session_hash, fallback)
        for fallback in user.get_session_auth_fallback_hash()
    )


# What a login check survives: the session's database or cache being briefly unreachable.
OUTAGES: tuple[type[BaseException], ...] = (DatabaseError, *LAYER_ERRORS)


# --- One socket's guard -------------------------------------------------------------------


class SocketGuard:
    """The limits of one socket. `admit` on connect, `allow_message` on every frame,
    `login_holds` before a command, `watch` once accepted, `stop` when the socket ends."""

    def __init__(self, *, scope: dict[str, Any], rate: float, burst: int) -> None:
        user = scope.get("user")
        authenticated = bool(user is not None and user.is_authenticated and user.pk is not None)
        self.user_id: int | None = int(user.pk) if authenticated and user is not None else None
        session = scope.get("session")
        self.session_key: str | None = (
            getattr(session, "session_key", None) if self.user_id is not None else None
        )
        self.path = str(scope.get("path", ""))
        self.bucket = TokenBucket(rate=rate, burst=burst)
        self.check_seconds = float(settings.WEBSOCKET_SESSION_CHECK_SECONDS)
        self.socket_id: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def who(self) -> str:
        return f"user {self.user_id}" if self.user_id is not None else "anonymous"

    async def admit(self, *, socket_id: str) -> bool:
        """Take this socket's place in its user's count; False past the cap (logged).
        Anonymous sockets are not counted: a room of phones shares one address."""
        if self.user_id is None:
            return True
        cap = settings.WEBSOCKET_MAX_SOCKETS_PER_USER
        try:
            admitted = await socket_counter().acquire(
                user_id=self.user_id, socket_id=socket_id, cap=cap, ttl=self._ttl()
            )
        except LAYER_ERRORS as error:
            # The cap protects the site; an outage of its store must not take it down.
            logger.warning(
                "Counting sockets of %s failed (%s); admitting %s",
                self.who,
                layer_failure(error),
                self.path,
            )
            admitted = True
        if not admitted:
            logger.warning(
                "Refused a socket of %s on %s: %d already open", self.who, self.path, cap
            )
            return False
        self.socket_id = socket_id
        return True

    def allow_message(self) -> bool:
        """Spend one token for an incoming frame; False (logged, no payload) when the
        socket sends faster than its rate."""
        if self.bucket.take():
            return True
        logger.warning(
            "Closed a socket of %s on %s: more than %g messages/s (burst %d)",
            self.who,
            self.path,
            self.bucket.rate,
            int(self.bucket.burst),
        )
        return False

    async def login_holds(self) -> bool:
        """True for anonymous sockets; for the others, a fresh look at their session."""
        if self.user_id is None:
            return True
        return bool(await database_sync_to_async(self.login_holds_here)())

    def login_holds_here(self) -> bool:
        """`login_holds` for code already on the database thread: a command that goes
        there anyway checks the login in the same trip (gallery.consumers, navigate)."""
        if self.user_id is None:
            return True
        holds = self.session_key is not None and socket_login_holds(
            session_key=self.session_key, user_id=self.user_id
        )
        if not holds:
            logger.info("Closing a socket of %s on %s: its login has ended", self.who, self.path)
        return holds

    def watch(
        self,
        *,
        on_login_gone: Callable[[], Awaitable[None]],
        on_check: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """While the socket lives: every WEBSOCKET_SESSION_CHECK_SECONDS keep its place
        counted and re-check its login, calling `on_login_gone` once it fails, and
        `on_check` while it holds (anonymous sockets get `on_check` alone)."""
        if self._task is None and (self.user_id is not None or on_check is not None):
            self._task = asyncio.create_task(self._watch(on_login_gone, on_check))

    async def stop(self) -> None:
        """When the socket ends, however it ends: stop watching and give back its place."""
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        socket_id, self.socket_id = self.socket_id, None
        if socket_id is not None and self.user_id is not None:
            try:
                await socket_counter().release(user_id=self.user_id, socket_id=socket_id)
            except LAYER_ERRORS as error:
                # The entry expires by itself within its TTL.
                logger.warning(
                    "Releasing a socket of %s failed (%s); its place expires by itself",
                    self.who,
                    layer_failure(error),
                )

    async def _watch(
        self,
        on_login_gone: Callable[[], Awaitable[None]],
        on_check: Callable[[], Awaitable[None]] | None,
    ) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            if self.user_id is not None and not await self._login_still_holds():
                self._task = None
                await on_login_gone()
                return
            if on_check is not None:
                try:
                    await on_check()
                except Exception:
                    logger.exception("The periodic check of a socket of %s failed", self.who)

    async def _login_still_holds(self) -> bool:
        """Refresh the socket's place and look at its login; an outage of either store
        counts as holding (logged), to be looked at again next time."""
        assert self.user_id is not None
        if self.socket_id is not None:
            try:
                await socket_counter().acquire(
                    user_id=self.user_id,
                    socket_id=self.socket_id,
                    cap=settings.WEBSOCKET_MAX_SOCKETS_PER_USER,
                    ttl=self._ttl(),
                )
            except LAYER_ERRORS as error:
                logger.warning(
                    "Refreshing a socket of %s failed (%s)", self.who, layer_failure(error)
                )
        try:
            return await self.login_holds()
        except OUTAGES as error:
            logger.warning(
                "Re-checking the login of %s failed (%s)", self.who, layer_failure(error)
            )
            return True

    def _ttl(self) -> float:
        return self.check_seconds * TTL_INTERVALS


# --- The session behind a socket ----------------------------------------------------------


class SocketSessionMiddleware:
    """Puts the browser's session, named by its cookie, in a websocket's scope.

    channels' SessionMiddleware does that too, and wraps every send of the socket to
    save a modified session on an HTTP response, which a websocket never sends; its
    check (two lazy-object lookups and a settings read) ran for each message to each
    viewer: 6% of the event loop in `make bench --only fanout`. A socket only reads
    the session (SocketGuard re-reads it fresh), so here sends pass straight through.
    Goes inside channels' CookieMiddleware and outside its AuthMiddleware."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if "cookies" not in scope:
            raise ValueError("SocketSessionMiddleware must run inside CookieMiddleware.")
        engine = import_module(settings.SESSION_ENGINE)
        session_key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        scope = dict(scope, session=engine.SessionStore(session_key))
        return await self.inner(scope, receive, send)


# --- Closing a user's sockets at once -----------------------------------------------------


def _close_user_sockets_after_commit(user_id: int) -> None:
    from gallery.broadcast import user_sockets_close

    transaction.on_commit(lambda: user_sockets_close(user_id=user_id))


def close_sockets_on_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    """`user_logged_out`: the session behind the user's sockets is about to be flushed."""
    if user is not None and getattr(user, "pk", None) is not None:
        _close_user_sockets_after_commit(user.pk)


def close_sockets_of_inactive_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """`post_save` of a user: a deactivated user keeps no socket open."""
    if not instance.is_active and instance.pk is not None:
        _close_user_sockets_after_commit(instance.pk)


def close_sockets_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """`post_delete` of a user: nobody is left behind their sockets."""
    if instance.pk is not None:
        _close_user_sockets_after_commit(instance.pk)


def connect_signals() -> None:
    """Called once from the app's `ready`."""
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_delete, post_save

    user_model = get_user_model()
    user_logged_out.connect(close_sockets_on_logout, dispatch_uid="sockets-close-on-logout")
    post_save.connect(
        close_sockets_of_inactive_user, sender=user_model, dispatch_uid="sockets-close-inactive"
    )
    post_delete.connect(
        close_sockets_of_deleted_user, sender=user_model, dispatch_uid="sockets-close-deleted"
    )
