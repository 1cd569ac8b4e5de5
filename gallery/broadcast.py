"""Fan-out to terminal viewers through the channel layer. Called after commit only.

A layer that is down (Redis restarting) loses the message with a warning and nothing
else: the database already holds the state, and sockets re-read it when they reconnect.
"""

from __future__ import annotations

import logging
from typing import Any

from artterminal.groups import terminal_group_name, user_group_name
from artterminal.layers import group_send_or_warn
from gallery import events
from gallery.models import Image

logger = logging.getLogger(__name__)


def _group_send(group: str, message: dict[str, Any]) -> None:
    group_send_or_warn(group, message, logger=logger)


def terminal_state(*, terminal_id: int, state: dict[str, Any]) -> None:
    """Every viewer of the terminal receives the committed state (handler `terminal_state`)."""
    _group_send(terminal_group_name(terminal_id), dict(events.terminal_state_event(state)))


def image_changed(*, image: Image) -> None:
    """Progress, completion or failure of an image, for the terminal it was made for."""
    if image.terminal_id is None:
        return
    _group_send(
        terminal_group_name(image.terminal_id),
        {"type": "image.progress", "image": image_progress_payload(image)},
    )


def image_progress_payload(image: Image) -> dict[str, Any]:
    return {
        "id": image.pk,
        "status": image.status,
        "progress": image.progress,
        "error": image.error,
        "prompt": image.prompt,
        "title": image.title,
        "thumbnail_url": image.thumbnail.url if image.thumbnail else "",
        "url": image.get_absolute_url(),
    }


def terminal_access_changed(*, terminal_id: int) -> None:
    """Who may watch or drive the terminal may have changed (it went private, changed
    owner, or is gone): each of its sockets re-reads its rights (handler `terminal_access`)."""
    _group_send(
        terminal_group_name(terminal_id), {"type": "terminal.access", "terminal_id": terminal_id}
    )


def user_access_changed(*, user_id: int, terminal_id: int | None = None) -> None:
    """One user's rights changed, on one terminal (a membership) or on all (staff status):
    that user's sockets re-read their rights."""
    _group_send(user_group_name(user_id), {"type": "terminal.access", "terminal_id": terminal_id})


def user_sockets_close(*, user_id: int) -> None:
    """Close every terminal socket of a user (on logout or deactivation)."""
    _group_send(user_group_name(user_id), {"type": "user.logout"})
