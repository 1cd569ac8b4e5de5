"""Sockets of this process that lost a terminal's newest states get its current one.

The channel layer drops messages for a socket that falls behind, newest first, so no
later message reveals the loss. Rather than every socket asking the database after every
state, this process reads a terminal's version once, after its states have been quiet
for a moment, and sends the current state to whichever of its sockets are behind: one
query per terminal and burst, however many viewers it has.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async

from artterminal.loops import per_loop
from gallery import events, selectors
from gallery.models import Terminal

logger = logging.getLogger(__name__)

# How long a terminal's states stay quiet before this process checks its sockets.
QUIET_SECONDS = 1.0


class Viewer(Protocol):
    """A terminal socket as the catch-up sees it."""

    sent_version: int

    async def catch_up(self, event: events.TerminalStateEvent) -> None:
        """Send the terminal's current state (a group message's form) to a socket behind it."""
        ...


class CatchUp:
    """The terminals with live sockets in this process (on one event loop)."""

    def __init__(self) -> None:
        self._viewers: dict[int, weakref.WeakSet[Any]] = {}
        self._quiet_until: dict[int, float] = {}
        self._checks: dict[int, asyncio.Task[None]] = {}

    def add(self, *, terminal_id: int, viewer: Viewer) -> None:
        self._viewers.setdefault(terminal_id, weakref.WeakSet()).add(viewer)

    def discard(self, *, terminal_id: int, viewer: Viewer) -> None:
        viewers = self._viewers.get(terminal_id)
        if viewers is not None:
            viewers.discard(viewer)
            if not viewers:
                del self._viewers[terminal_id]

    def state_seen(self, *, terminal_id: int) -> None:
        """A state of the terminal reached this process (gallery.feeds, once for all of
        its sockets): once states stop arriving for QUIET_SECONDS, check that everyone
        here got the last one."""
        loop = asyncio.get_running_loop()
        self._quiet_until[terminal_id] = loop.time() + QUIET_SECONDS
        check = self._checks.get(terminal_id)
        if check is None or check.done():
            self._checks[terminal_id] = asyncio.create_task(self._check(terminal_id))

    async def _check(self, terminal_id: int) -> None:
        loop = asyncio.get_running_loop()
        while True:  # until the terminal's states have been quiet long enough
            wait = self._quiet_until.get(terminal_id, 0.0) - loop.time()
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self._quiet_until.pop(terminal_id, None)
        viewers = list(self._viewers.get(terminal_id, ()))
        if not viewers:
            return
        try:
            state = await _state_if_behind(
                terminal_id=terminal_id, versions=[v.sent_version for v in viewers]
            )
            if state is None:
                return
            event = events.terminal_state_event(state)
            for viewer in viewers:
                if viewer.sent_version < event["version"]:
                    await viewer.catch_up(event)
        except Exception:
            logger.exception("Catching up the viewers of terminal %s failed", terminal_id)


@database_sync_to_async
def _state_if_behind(*, terminal_id: int, versions: list[int]) -> dict[str, Any] | None:
    """The terminal's current state, read only when some socket is behind it."""
    version = Terminal.objects.filter(pk=terminal_id).values_list("version", flat=True).first()
    if version is None or min(versions) >= version:
        return None
    terminal = Terminal.objects.select_related("current_image").filter(pk=terminal_id).first()
    return None if terminal is None else selectors.terminal_state(terminal=terminal)


# This event loop's catch-up (tasks and sockets belong to the loop they run on).
catch_up = per_loop(CatchUp)
