"""Fan-out to terminal viewers through the channel layer. Called after commit only."""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from artterminal.groups import terminal_group_name, user_group_name
from gallery.models import Image


def _group_send(group: str, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is not None:
        async_to_sync(layer.group_send)(group, message)


def terminal_state(*, terminal_id: int, state: dict[str, Any]) -> None:
    """Every viewer of the terminal receives the committed state (handler `terminal_state`)."""
    _group_send(terminal_group_name(terminal_id), {**state, "type": "terminal.state"})


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


def user_sockets_close(*, user_id: int) -> None:
    """Close every terminal socket of a user (on logout or deactivation)."""
    _group_send(user_group_name(user_id), {"type": "user.logout"})
