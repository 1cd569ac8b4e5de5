"""System checks for a deployment that has outgrown one process.

The in-memory channel layer delivers a group message only to sockets of the process that
sent it. One Daphne is the embedded default and fine; a second Daphne would show each
viewer only the changes made through its own process, and events sent by the task worker
(image progress) never reach a viewer at all.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Info, Warning, register

IN_MEMORY_LAYERS = frozenset(
    {"artterminal.layers.InMemoryChannelLayer", "channels.layers.InMemoryChannelLayer"}
)
SCALING_TAG = "scaling"


def _uses_in_memory_layer() -> bool:
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {})
    return layer.get("BACKEND") in IN_MEMORY_LAYERS


@register(SCALING_TAG)
def check_channel_layer_fan_out(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warn when several web processes are declared but cannot reach each other's sockets."""
    if settings.DEBUG or not _uses_in_memory_layer():
        return []
    processes = settings.WEB_CONCURRENCY
    if processes > 1:
        return [
            Warning(
                f"WEB_CONCURRENCY is {processes} but the channel layer is in-memory: a viewer "
                "sees only the changes made through its own process.",
                hint="Set REDIS_URL so every process shares the Redis channel layer.",
                id="artterminal.W001",
            )
        ]
    return [
        Info(
            "The in-memory channel layer serves one process only: events sent from another "
            "process (the task worker's image progress, a second Daphne) reach no viewer.",
            hint="Set REDIS_URL before running a task worker or more than one Daphne.",
            id="artterminal.I001",
        )
    ]
