"""HTTP requests run their synchronous code on threads kept between requests."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.core.signals import request_started
from django.db import connection, connections
from django.db.backends.signals import connection_created

from artterminal.asgi import application
from artterminal.request_threads import RequestThreads


async def _get(path: str) -> tuple[int, dict[str, str]]:
    """Status and headers of a GET through the site's own ASGI application."""
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"testserver")])
    response = await communicator.get_response(timeout=10)
    await communicator.wait(10)
    headers = {name.decode().lower(): value.decode() for name, value in response["headers"]}
    return response["status"], headers


async def test_sync_and_async_views_answer_through_every_middleware(
    transactional_db: None,
) -> None:
    status, headers = await _get("/terminals/")  # a sync view, on the request's thread
    assert status == 200
    assert headers["x-frame-options"] == "DENY"
    assert "content-security-policy" in headers
    # An async view (the engine's), run on the event loop from inside the sync chain.
    status, headers = await _get("/engine/v1/realtime/client_secrets")
    assert status == 405
    assert headers["allow"] == "POST, OPTIONS"
    assert headers["x-frame-options"] == "DENY"


async def test_requests_one_after_another_share_a_thread_and_its_connection(
    transactional_db: None,
) -> None:
    threads: list[int] = []
    connects: list[int] = []

    def on_request(**kwargs: Any) -> None:
        threads.append(threading.get_ident())

    def on_connect(**kwargs: Any) -> None:
        connects.append(threading.get_ident())

    request_started.connect(on_request)
    connection_created.connect(on_connect)
    try:
        for _ in range(3):
            status, _ = await _get("/terminals/")
            assert status == 200
    finally:
        request_started.disconnect(on_request)
        connection_created.disconnect(on_connect)
    assert len(threads) == 3
    assert len(set(threads)) == 1, "each request ran on a thread of its own"
    assert threads[0] != threading.get_ident()
    # The first request may connect; the ones after it use the same connection.
    assert connects in ([], threads[:1])


def _held_until(event: threading.Event) -> int:
    assert event.wait(10), "the other request never ran"
    return threading.get_ident()


def _release(event: threading.Event) -> int:
    event.set()
    return threading.get_ident()


async def _on_borrowed_thread(pool: RequestThreads, work: Any, event: threading.Event) -> int:
    """`work(event)` as a request's sync code runs it: on a thread borrowed from `pool`."""
    async with pool.borrowed():
        thread: int = await sync_to_async(work, thread_sensitive=True)(event)
        return thread


async def test_a_request_that_waits_on_another_never_waits_for_a_thread() -> None:
    # As a token request waits on the engine served by the same process: a pool that
    # made the second request wait for the first one's thread would never finish.
    pool = RequestThreads(keep=1)
    released = threading.Event()

    def request(work: Any) -> Any:
        return _on_borrowed_thread(pool, work, released)

    first = asyncio.create_task(request(_held_until))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(request(_release))
    threads = await asyncio.wait_for(asyncio.gather(first, second), 15)
    assert threads[0] != threads[1]
    assert len(pool.idle) == 1


def _ident(event: threading.Event) -> int:
    return threading.get_ident()


async def test_a_request_cancelled_mid_view_leaves_no_busy_thread_in_the_pool() -> None:
    # Daphne cancels a request whose client left; its sync view runs on regardless.
    pool = RequestThreads(keep=1)
    released = threading.Event()

    def request(work: Any) -> Any:
        return _on_borrowed_thread(pool, work, released)

    running: list[threading.Thread] = []

    def view(event: threading.Event) -> int:
        running.append(threading.current_thread())
        return _held_until(event)

    killed = asyncio.create_task(request(view))
    await asyncio.sleep(0.05)
    (held,) = running
    killed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await killed
    assert pool.idle == [], "a thread still running a view went back to the pool"
    # The next request gets a thread of its own instead of queueing behind that view.
    fresh = await asyncio.wait_for(request(_ident), 5)
    assert fresh != held.ident
    assert held.is_alive() and not released.is_set()
    released.set()
    # Once the view is done its thread comes back; past the pool's size, it ends.
    held.join(10)
    assert not held.is_alive()
    assert len(pool.idle) == 1
    assert await request(_ident) == fresh


def _open_connection() -> tuple[threading.Thread, Any]:
    connection.ensure_connection()
    return threading.current_thread(), connection


async def test_idle_threads_beyond_the_pool_close_their_connections_and_end(
    transactional_db: None, monkeypatch: Any
) -> None:
    # The test database lives in memory, where Django ignores close(): note who asks.
    closed_on: list[threading.Thread] = []
    wrapper_class = type(connections["default"])
    close = wrapper_class.close

    def noted_close(wrapper: Any) -> None:
        closed_on.append(threading.current_thread())
        close(wrapper)

    monkeypatch.setattr(wrapper_class, "close", noted_close)
    pool = RequestThreads(keep=1)
    both_inside = asyncio.Barrier(2)
    opened: list[tuple[threading.Thread, Any]] = []

    async def request() -> None:
        async with pool.borrowed():
            opened.append(await sync_to_async(_open_connection, thread_sensitive=True)())
            await both_inside.wait()  # so neither finds the other's thread idle

    await asyncio.wait_for(asyncio.gather(request(), request()), 15)
    assert len(pool.idle) == 1
    assert opened[0][0] is not opened[1][0]
    deadline = time.monotonic() + 10
    while all(thread.is_alive() for thread, _ in opened) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    ended = [(thread, wrapper) for thread, wrapper in opened if not thread.is_alive()]
    assert len(ended) == 1, "one thread beyond the pool's size should have ended"
    assert closed_on == [ended[0][0]], "it ended without closing its connection"
    # The kept thread is the one the next request gets.
    async with pool.borrowed():
        thread, _ = await sync_to_async(_open_connection, thread_sensitive=True)()
        await sync_to_async(connections.close_all, thread_sensitive=True)()
    assert thread.is_alive() and thread in [t for t, _ in opened]


async def test_an_engine_call_outlives_its_request_with_threads_to_call(
    transactional_db: None, monkeypatch: Any
) -> None:
    """A call's tasks run after the request that opened it has answered: sync code
    they call must find a thread, not the request's, which ended with the response."""
    from aiortc import RTCPeerConnection

    from voice.engine import call as engine_call
    from voice.engine import secrets
    from voice.engine.registry import registry
    from voice.engine.session import client_secret_request

    outcomes: list[str] = []
    watch = engine_call.Call._watch

    async def watch_then_sync(call: Any) -> None:
        await asyncio.sleep(0.2)  # the calls request has answered by now
        try:
            outcomes.append(await sync_to_async(lambda: "ran", thread_sensitive=True)())
        except RuntimeError as error:
            outcomes.append(str(error))
        await watch(call)

    monkeypatch.setattr(engine_call.Call, "_watch", watch_then_sync)
    session, ttl = client_secret_request(data={})
    key = secrets.client_secret_create(session=session, ttl_seconds=ttl).value
    caller = RTCPeerConnection()
    caller.createDataChannel("oai-events")
    await caller.setLocalDescription(await caller.createOffer())
    communicator = HttpCommunicator(
        application,
        "POST",
        "/engine/v1/realtime/calls",
        body=caller.localDescription.sdp.encode(),
        headers=[
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/sdp"),
        ],
    )
    call_id = ""
    try:
        response = await communicator.get_response(timeout=20)
        assert response["status"] == 201
        call_id = dict(response["headers"])[b"Location"].decode().rsplit("/", 1)[1]
        deadline = time.monotonic() + 10
        while not outcomes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert outcomes == ["ran"]
    finally:
        await caller.close()
        started = registry.get(call_id) if call_id else None
        if started is not None:
            await started.close("test over")
