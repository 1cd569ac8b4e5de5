"""Threads for the synchronous half of HTTP requests, kept from one request to the next,
and the site's HTTP handler that runs each request's middleware and view on one of them.

Django's ASGI handler runs a request's synchronous code (middleware, sync views, the
request signals) in a context of its own, which asgiref serves with a thread made for
that request alone: a thread start and a database connect (for SQLite its PRAGMAs and a
read of the schema) on every request. Here a request borrows a thread from this
process's pool instead, through asgiref's own `ThreadSensitiveContext(executor=...)`,
and gives it back when it is done; the thread's connection lives on for the next
request, as CONN_MAX_AGE says.

The pool never makes a request wait: one that finds no idle thread gets a new one. A
bounded pool could deadlock, as a request may wait on another request to this same
process (the site mints its voice keys at its own engine). At most IDLE_THREADS idle
threads are kept; a thread beyond that closes its connections and ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpRequest, HttpResponseBase

# Enough for the requests one process serves at once under load (the token bench runs
# 20); a burst beyond it makes threads that end when it is over.
IDLE_THREADS = 32


class RequestThreads:
    """A process's idle request threads, each an executor of one worker."""

    def __init__(self, *, keep: int = IDLE_THREADS) -> None:
        self.keep = keep
        self.idle: list[ThreadPoolExecutor] = []

    @contextlib.asynccontextmanager
    async def borrowed(self) -> AsyncIterator[None]:
        """Thread-sensitive code inside runs on one thread of the pool, as asgiref runs
        a request's on a thread of its own."""
        executor = (
            self.idle.pop()
            if self.idle
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
        )
        try:
            async with ThreadSensitiveContext(executor=executor):
                yield
        except BaseException:
            # A request cancelled mid-view (Daphne kills one whose client left) leaves
            # its sync code running: the thread comes back once that code is done, or
            # the next request would queue behind it on the executor's one worker.
            executor.submit(_idle).add_done_callback(lambda _: self._give_back(executor))
            raise
        self._give_back(executor)

    def _give_back(self, executor: ThreadPoolExecutor) -> None:
        # Also called on the executor's own thread (above): appending is atomic, and
        # only the event loop pops, so a check-then-pop there still finds a thread.
        if len(self.idle) < self.keep:
            self.idle.append(executor)
        else:
            _retire(executor)

    def clear(self) -> None:
        """End every idle thread once it has closed its connections (the test suite
        does this after each test, so no test inherits another's connections)."""
        idle, self.idle = self.idle, []
        for executor in idle:
            _retire(executor, wait=True)


def _idle() -> None:
    """Queued behind whatever a cancelled request left running: done means idle."""


def _retire(executor: ThreadPoolExecutor, *, wait: bool = False) -> None:
    executor.submit(connections.close_all)
    executor.shutdown(wait=wait)


request_threads = RequestThreads()


class PooledThreadsASGIHandler(ASGIHandler):
    """Django's ASGI handler, running each request's synchronous code on a pooled thread,
    where the middleware and a sync view run in one hop from the event loop.

    Django's own ASGI handler builds an async middleware chain: a synchronous
    middleware then costs two hops between the loop and the request's thread, and a
    sync view two more. Here the chain is built as for WSGI and called in one hop;
    an async view (the engine's) runs on the event loop, through the async_to_sync
    Django wraps it in.

    A task such a view starts inherits that async_to_sync's context, whose executor
    (the request's thread) ends with the response: `sync_to_async` in the task would
    then fail. A task meant to outlive its request starts in a context of its own, as
    the engine's calls do (`asyncio.create_task(..., context=contextvars.Context())`).
    Django's async middleware chain would avoid this at two hops a middleware for
    every engine request.
    """

    def __init__(self) -> None:
        BaseHandler.__init__(self)  # ASGIHandler's own would build the async chain
        self.load_middleware(is_async=False)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        response: HttpResponseBase = await sync_to_async(self.get_response, thread_sensitive=True)(
            request
        )
        return response

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        async with request_threads.borrowed():
            await self.handle(scope, receive, send)
