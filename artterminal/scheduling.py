"""Self-rescheduling background checks: at most one run of a task waits in the queue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django_tasks import TaskResultStatus
from django_tasks.base import Task


def task_enqueue_once(task: Task[Any, Any], *, run_after: datetime) -> bool:
    """Enqueue `task` (no arguments) to run at `run_after`, unless a run already waits.

    For periodic checks that re-schedule themselves while there is work left: however
    often they are asked for, the queue holds one. False when nothing was enqueued (one
    waits, or the backend cannot defer a task).
    """
    if not task.get_backend().supports_defer or _waiting(task):
        return False
    task.using(run_after=run_after).enqueue()
    return True


def _waiting(task: Task[Any, Any]) -> bool:
    from django_tasks_db.backend import DatabaseBackend
    from django_tasks_db.models import DBTaskResult

    if not isinstance(task.get_backend(), DatabaseBackend):
        return False
    return DBTaskResult.objects.filter(
        task_path=task.module_path, status=TaskResultStatus.READY
    ).exists()
