"""Background jobs of voice (run by the django-tasks database worker, `db_worker`).

Tasks hold no logic: they call services.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from django_tasks import task

from artterminal.scheduling import task_enqueue_once
from voice import selectors, services

# How soon after a session could be due the check notices: a minute is well inside
# the key's grace and the silence limit.
EXPIRY_CHECK_INTERVAL = timedelta(seconds=60)


@task()
def expire_voice_sessions() -> int:
    """End sessions a vanished browser left open; keeps checking while any are open."""
    ended = services.voice_sessions_expire()
    if selectors.voice_sessions_open_exist():
        schedule_expiry_check()
    return len(ended)


def schedule_expiry_check() -> None:
    """Enqueue one `expire_voice_sessions` a minute from now; one waits at a time."""
    task_enqueue_once(expire_voice_sessions, run_after=timezone.now() + EXPIRY_CHECK_INTERVAL)
