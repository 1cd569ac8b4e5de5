"""Shared fixtures: users, terminals and images made the way the site makes them."""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import connections
from PIL import Image as PILImage

from artterminal.request_threads import request_threads
from gallery.models import Image, Terminal, TerminalMembership
from tests.live import RedisServer

User = get_user_model()


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Every test writes images to its own folder, never to the developer's media/."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    """Rate-limit counters live in the cache, which outlives a test otherwise."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def fresh_request_threads() -> Iterator[None]:
    """Requests served in-process run on threads that keep their database connections
    (the site's pooled ones, and asgiref's one shared thread for Django's test
    AsyncClient): none may reach a later test, which may not be allowed the database."""
    yield
    request_threads.clear()
    SyncToAsync.single_thread_executor.submit(_forget_connections).result()


def _forget_connections() -> None:
    """Close and drop this thread's connections: Django ignores close() for the test
    database in memory, and a later test would still find the connection open."""
    for connection in connections.all(initialized_only=True):
        connection.close()
        del connections[connection.alias]


@pytest.fixture(autouse=True)
def in_memory_channel_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "artterminal.layers.InMemoryChannelLayer"}}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and restart (never the machine's)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_user(db: None) -> Callable[..., Any]:
    counter = iter(range(1, 10_000))

    def make(
        username: str | None = None, *, password: str = "a-long-test-password", **extra: Any
    ) -> Any:
        return User.objects.create_user(
            username=username or f"user{next(counter)}", password=password, **extra
        )

    return make


@pytest.fixture
def owner(make_user: Callable[..., Any]) -> Any:
    return make_user("owner")


@pytest.fixture
def png_bytes() -> Callable[..., bytes]:
    def make(colour: str = "red", size: tuple[int, int] = (32, 32)) -> bytes:
        buffer = io.BytesIO()
        PILImage.new("RGB", size, colour).save(buffer, "PNG")
        return buffer.getvalue()

    return make


@pytest.fixture
def make_image(db: None, owner: Any, png_bytes: Callable[..., bytes]) -> Callable[..., Image]:
    def make(
        *,
        terminal: Terminal | None = None,
        prompt: str = "a red fox under a blue moon",
        **extra: Any,
    ) -> Image:
        image = Image(
            owner=extra.pop("owner", owner),
            terminal=terminal,
            prompt=prompt,
            title=extra.pop("title", prompt[:40]),
            provider="local",
            status=extra.pop("status", Image.Status.READY),
            progress=100,
            width=32,
            height=32,
            **extra,
        )
        if image.status == Image.Status.READY:
            image.file.save("image.png", ContentFile(png_bytes()), save=False)
            image.thumbnail.save("thumb.png", ContentFile(png_bytes(size=(8, 8))), save=False)
        image.save()
        return image

    return make


@pytest.fixture
def make_terminal(
    db: None, owner: Any, make_image: Callable[..., Image]
) -> Callable[..., Terminal]:
    def make(
        *, slug: str = "lobby", images: int = 3, is_public: bool = True, **extra: Any
    ) -> Terminal:
        terminal = Terminal.objects.create(
            slug=slug,
            name=extra.pop("name", slug.title()),
            owner=extra.pop("owner", owner),
            is_public=is_public,
            **extra,
        )
        made = [
            make_image(terminal=terminal, prompt=f"picture number {n}")
            for n in range(1, images + 1)
        ]
        if made:
            terminal.current_image = made[0]
            terminal.save(update_fields=["current_image"])
        return terminal

    return make


@pytest.fixture
def add_member() -> Callable[..., TerminalMembership]:
    def add(
        terminal: Terminal, user: Any, role: str = TerminalMembership.Role.CONTROLLER
    ) -> TerminalMembership:
        return TerminalMembership.objects.create(terminal=terminal, user=user, role=role)

    return add
