"""Websockets get the browser's session in their scope, and their sends go out unwrapped."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from channels.sessions import CookieMiddleware
from django.conf import settings

from artterminal.sockets import SocketSessionMiddleware

pytestmark = pytest.mark.django_db(transaction=True)


async def _run(headers: list[tuple[bytes, bytes]]) -> tuple[dict[str, Any], Any]:
    seen: dict[str, Any] = {}

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["scope"], seen["send"] = scope, send

    async def send(message: dict[str, Any]) -> None:
        pass

    app = CookieMiddleware(SocketSessionMiddleware(inner))
    await app({"type": "websocket", "headers": headers}, None, send)
    assert seen["send"] is send  # nothing between the consumer and the server
    return seen["scope"], send


async def test_the_cookie_names_the_session() -> None:
    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store["greeting"] = "hello"
    await store.asave()
    cookie = f"{settings.SESSION_COOKIE_NAME}={store.session_key}".encode()
    scope, _ = await _run([(b"cookie", cookie)])
    session = scope["session"]
    assert session.session_key == store.session_key
    assert await session.aget("greeting") == "hello"


async def test_no_cookie_is_an_empty_session() -> None:
    scope, _ = await _run([])
    assert scope["session"].session_key is None
    assert await scope["session"].aget("greeting") is None


async def test_it_needs_the_cookie_middleware_outside_it() -> None:
    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ValueError, match="CookieMiddleware"):
        await SocketSessionMiddleware(inner)({"type": "websocket"}, None, None)
