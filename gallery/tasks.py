"""Background jobs of the gallery (run by the django-tasks database worker, `db_worker`).

Tasks hold no logic: they call services in `gallery.generation`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django_tasks import TaskContext, task

from artterminal.scheduling import task_enqueue_once
from gallery import generation

logger = logging.getLogger(__name__)


@task(takes_context=True)
def generate_image(context: TaskContext, *, image_id: int) -> None:
    """Draw one image. Schedules a stale-job check first, in case this worker dies."""
    schedule_reaper()
    generation.image_render(image_id=image_id, task_id=str(context.task_result.id))


@task()
def reap_stale_images() -> int:
    """Rescue images a dead worker left behind; keeps checking while any are unfinished."""
    handled = generation.image_requeue_stale()
    if generation.unfinished_images_exist():
        schedule_reaper()
    return len(handled)


def schedule_reaper() -> None:
    """Enqueue one `reap_stale_images` for when a job starting now would count as lost.

    At most one waits in the queue at a time, so a busy gallery does not pile them up.
    """
    delay = timedelta(seconds=settings.IMAGE_JOB_TIMEOUT_SECONDS + 1)
    task_enqueue_once(reap_stale_images, run_after=timezone.now() + delay)
