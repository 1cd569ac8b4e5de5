"""Under ASGI the site's middleware runs in one worker thread, entered once a request."""

from __future__ import annotations

from typing import Any

from asgiref.sync import SyncToAsync
from django.core.handlers.asgi import ASGIHandler
from django.test import AsyncClient


def _chain() -> Any:
    """The handler Django built from MIDDLEWARE for ASGI (a private field the stubs omit)."""
    return getattr(ASGIHandler(), "_middleware_chain")  # noqa: B009


def test_the_whole_stack_is_one_hop_from_the_event_loop() -> None:
    # The outermost handler is one sync_to_async around every middleware.
    assert isinstance(_chain(), SyncToAsync)


def test_without_it_every_middleware_would_hop_on_its_own(settings: Any) -> None:
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if not m.endswith("SyncMiddlewareStack")]
    assert not isinstance(_chain(), SyncToAsync)


async def test_sync_and_async_views_answer_through_it(db: None) -> None:
    client = AsyncClient()
    page = await client.get("/terminals/")  # a sync view, run in the stack's thread
    assert page.status_code == 200
    # An async view (the engine's), run on the event loop from inside the stack.
    refused = await client.get("/engine/v1/realtime/client_secrets")
    assert refused.status_code == 405
    assert refused["Allow"] == "POST, OPTIONS"
