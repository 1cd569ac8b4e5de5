"""Carry image progress from the task worker to this process's viewers.

The in-memory channel layer lives inside one process, so what the worker broadcasts
never leaves the worker. With that layer (the embedded default) each web process polls
the images table instead and re-sends what changed to its own terminal groups. With a
shared layer (Redis) the worker's broadcasts arrive directly and the relay stays off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from datetime import datetime, timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.utils import timezone

from artterminal.groups import terminal_group_name
from gallery import events, selectors
from gallery.broadcast import image_progress_payload
from gallery.models import Image, Terminal

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5
BATCH = 100
# `updated_at` is taken when a row is saved, not when its transaction commits: a change
# can become visible after a newer one. Each poll looks this far behind the newest
# change seen, past the longest a save waits to commit (SQLite's busy timeout, 20 s).
LOOKBACK = timedelta(seconds=30)

_relays: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


async def ensure_image_relay() -> None:
    """Start this event loop's relay once; a no-op unless the layer is in-memory."""
    layer = get_channel_layer()
    if not isinstance(layer, InMemoryChannelLayer):
        return
    loop = asyncio.get_running_loop()
    running = _relays.get(loop)
    if running is not None and not running.done():
        return
    _relays[loop] = loop.create_task(ImageRelay(layer).run(), name="gallery-image-relay")


async def stop_image_relay() -> None:
    """Stop this event loop's relay (tests, shutdown)."""
    task = _relays.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ImageRelay:
    def __init__(self, layer: Any) -> None:
        self.layer = layer
        # What changed before the relay started is the pages' own business: they read
        # the state when they connect.
        self.started: datetime = timezone.now()
        self.since: datetime = self.started  # the newest change seen
        # Changes relayed within the look-back, by image: the `updated_at` each was sent at.
        self.sent: dict[int, datetime] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a database hiccup must not end the relay for good
                logger.exception("Image relay poll failed")
            await asyncio.sleep(POLL_SECONDS)

    async def poll_once(self) -> int:
        """Relay every image changed since the last poll; returns how many were sent."""
        changes = await database_sync_to_async(self._changes)()
        for payload, terminal_id, state in changes:
            group = terminal_group_name(terminal_id)
            await self.layer.group_send(group, {"type": "image.progress", "image": payload})
            if state is not None:
                await self.layer.group_send(group, dict(events.terminal_state_event(state)))
        return len(changes)

    def _changes(self) -> list[tuple[dict[str, Any], int, dict[str, Any] | None]]:
        # Ids and times first (a cheap read of the look-back), then whole rows for what
        # has not been relayed at that time.
        floor = max(self.since - LOOKBACK, self.started)
        recent = Image.objects.filter(updated_at__gte=floor, terminal__isnull=False).values_list(
            "pk", "updated_at"
        )
        unsent = sorted((at, pk) for pk, at in recent if self.sent.get(pk) != at)[:BATCH]
        if not unsent:
            return []
        images = list(
            Image.objects.filter(pk__in=[pk for _, pk in unsent]).order_by("updated_at", "id")
        )
        for image in images:
            self.sent[image.pk] = image.updated_at
            self.since = max(self.since, image.updated_at)
        horizon = self.since - LOOKBACK
        self.sent = {pk: at for pk, at in self.sent.items() if at >= horizon}
        shown = self._terminals_showing(images)
        changes = []
        for image in images:
            if image.terminal_id is None:  # moved off its terminal since the first read
                continue
            state = None
            terminal = shown.get(image.terminal_id)
            if image.is_ready and terminal is not None and terminal.current_image_id == image.pk:
                state = selectors.terminal_state(terminal=terminal)
            changes.append((image_progress_payload(image), image.terminal_id, state))
        return changes

    @staticmethod
    def _terminals_showing(images: list[Image]) -> dict[int, Terminal]:
        """Terminals whose current image just became ready (the worker made it current)."""
        ready = {i.terminal_id: i.pk for i in images if i.is_ready and i.terminal_id is not None}
        if not ready:
            return {}
        terminals = Terminal.objects.select_related("current_image").filter(
            pk__in=list(ready), current_image_id__in=list(ready.values())
        )
        return {t.pk: t for t in terminals}
