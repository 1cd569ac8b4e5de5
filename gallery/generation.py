"""Rendering images in the background, and rescuing jobs whose worker died.

`image_render` is one attempt at one image (run by the `generate_image` task, never in a
request). `image_requeue_stale` finds images a lost worker left queued or generating and
re-enqueues them, up to `MAX_ATTEMPTS`, or fails them with a reason a person can read.
It runs from `manage.py reap_images` (started by `make run` before the worker) and from
the `reap_stale_images` task, which every generation schedules for when its job would
count as lost — so a worker killed mid-job is noticed by the next worker, with no extra
process.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone
from PIL import Image as PILImage

from gallery import broadcast, selectors
from gallery.models import Image, Terminal
from gallery.providers import GeneratedImage, ImageProviderError, get_provider

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
THUMBNAIL_SIZE = 320
PROGRESS_INTERVAL_SECONDS = 0.25
RETRY_DELAY_SECONDS = 15
MAX_RETRY_DELAY_SECONDS = 15 * 60
UNEXPECTED_FAILURE = "The generator failed unexpectedly. Try again."
STORE_FAILURE = "The picture was drawn but could not be saved. Try again."


def _broadcast_after_commit(image: Image) -> None:
    transaction.on_commit(lambda: broadcast.image_changed(image=image))


def image_render(*, image_id: int, task_id: str = "") -> Image | None:
    """Generate the picture for a queued image and store it, or fail it with a reason.

    Returns None when there is nothing to do: the image is gone, finished, or its job was
    handed to another task (a re-queued job must not be drawn twice).
    """
    image = _image_start(image_id=image_id, task_id=task_id)
    if image is None:
        return None
    progress = _progress_reporter(image)
    try:
        provider = get_provider(image.provider)
        generated = provider.generate(
            prompt=image.prompt,
            style=image.style,
            seed=image.seed,
            size=settings.IMAGE_SIZE,
            progress=progress,
        )
    except ImageProviderError as exc:
        logger.warning("Image %s failed: %s", image.pk, exc.code)
        # The upstream's own Retry-After comes first; one too far off fails the image
        # now, with the message saying when to try again, instead of hiding it queued.
        delay = max(RETRY_DELAY_SECONDS * image.attempts, exc.retry_after or 0)
        if exc.retryable and image.attempts < MAX_ATTEMPTS and delay <= MAX_RETRY_DELAY_SECONDS:
            return _image_retry_later(image=image, reason=exc.message, delay=delay)
        return image_fail(image_id=image.pk, task_id=image.task_id, reason=exc.message)
    except Exception:
        logger.exception("Image %s failed unexpectedly", image.pk)
        image_fail(image_id=image.pk, task_id=image.task_id, reason=UNEXPECTED_FAILURE)
        raise
    try:
        return _image_finish(image=image, generated=generated)
    except Exception:
        # Drawn but not stored (a full disk, a picture Pillow cannot read): say so now,
        # rather than leave it generating for the reaper to draw again and again.
        logger.exception("Image %s could not be stored", image.pk)
        image_fail(image_id=image.pk, task_id=image.task_id, reason=STORE_FAILURE)
        raise


def _image_start(*, image_id: int, task_id: str) -> Image | None:
    with transaction.atomic():
        image = Image.objects.select_for_update().filter(pk=image_id).first()
        if image is None or image.status in (Image.Status.READY, Image.Status.FAILED):
            return None
        # The enqueueing request writes task_id just after enqueue, so a blank one is ours.
        if task_id and image.task_id and image.task_id != task_id:
            logger.info("Image %s: task %s was superseded", image_id, task_id)
            return None
        image.status = Image.Status.GENERATING
        image.attempts += 1
        image.progress = 0
        image.error = ""
        image.task_id = task_id or image.task_id
        image.save(
            update_fields=["status", "attempts", "progress", "error", "task_id", "updated_at"]
        )
        _broadcast_after_commit(image)
    return image


def _progress_reporter(image: Image) -> Callable[[int], None]:
    """Record progress (also the job's heartbeat) and tell viewers, at most every 0.25 s."""
    last_sent = 0.0

    def report(percent: int) -> None:
        nonlocal last_sent
        percent = max(0, min(99, int(percent)))  # 100 means stored, which comes later
        now = time.monotonic()
        if percent <= image.progress or now - last_sent < PROGRESS_INTERVAL_SECONDS:
            return
        last_sent = now
        updated = Image.objects.filter(
            pk=image.pk, status=Image.Status.GENERATING, task_id=image.task_id
        ).update(progress=percent, updated_at=timezone.now())
        if updated:
            image.progress = percent
            broadcast.image_changed(image=image)

    return report


def _thumbnail(png: bytes) -> bytes:
    with PILImage.open(io.BytesIO(png)) as picture:
        small = picture.convert("RGB")
        small.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), PILImage.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, "WEBP", quality=82, method=4)
    return buffer.getvalue()


def stored_name(image: Image) -> str:
    """The name its files are stored under. Media is served without a rights check (by
    the proxy, in production), so the name carries a random part: a private terminal's
    pictures cannot be found by counting ids."""
    return f"image-{image.pk}-{secrets.token_urlsafe(16)}"


def _image_finish(*, image: Image, generated: GeneratedImage) -> Image | None:
    thumbnail = _thumbnail(generated.png)
    with transaction.atomic():
        locked = Image.objects.select_for_update().filter(pk=image.pk).first()
        if (
            locked is None
            or locked.status != Image.Status.GENERATING
            or locked.task_id != image.task_id
        ):
            return None  # failed or handed on while we drew: that outcome stands
        try:
            name = stored_name(locked)
            locked.file.save(f"{name}.png", ContentFile(generated.png), save=False)
            locked.thumbnail.save(f"{name}.webp", ContentFile(thumbnail), save=False)
            locked.width, locked.height = generated.width, generated.height
            locked.title = generated.title[:120]
            locked.description = generated.description
            locked.status = Image.Status.READY
            locked.progress = 100
            locked.error = ""
            locked.save()
        except Exception:
            # The row rolls back; files already written would be left to nobody.
            for stored in (locked.file, locked.thumbnail):
                if stored:
                    with contextlib.suppress(OSError):
                        stored.delete(save=False)
            raise
        _broadcast_after_commit(locked)
        if locked.terminal_id is not None:
            terminal_show_first_image(terminal_id=locked.terminal_id, image=locked)
    return locked


def terminal_show_first_image(*, terminal_id: int, image: Image) -> Terminal | None:
    """Make `image` the terminal's current one if it shows nothing yet (version + 1)."""
    with transaction.atomic():
        terminal = Terminal.objects.select_for_update().filter(pk=terminal_id).first()
        if terminal is None or terminal.current_image_id is not None:
            return None
        terminal.current_image = image
        terminal.version += 1
        terminal.save(update_fields=["current_image", "version"])
        state = selectors.terminal_state(terminal=terminal)
        transaction.on_commit(
            lambda: broadcast.terminal_state(terminal_id=terminal.pk, state=state)
        )
    return terminal


def image_fail(*, image_id: int, reason: str, task_id: str | None = None) -> Image | None:
    """Mark an unfinished image failed with a reason people can read."""
    with transaction.atomic():
        image = Image.objects.select_for_update().filter(pk=image_id).first()
        if image is None or image.status in (Image.Status.READY, Image.Status.FAILED):
            return None
        if task_id is not None and image.task_id != task_id:
            return None
        image.status = Image.Status.FAILED
        image.error = reason
        image.save(update_fields=["status", "error", "updated_at"])
        _broadcast_after_commit(image)
    return image


def _image_retry_later(*, image: Image, reason: str, delay: int) -> Image | None:
    with transaction.atomic():
        locked = Image.objects.select_for_update().filter(pk=image.pk).first()
        if locked is None or locked.task_id != image.task_id:
            return None
        # "The image service is busy right now. Trying again in 10 minutes.": the site
        # retries by itself, so the reason's advice to try again is left out.
        note = f"{reason.split(' Try again')[0]} Trying again in {_wait_text(delay)}."
        _image_requeue(locked, note=note, delay=delay)
    return locked


def _wait_text(seconds: int) -> str:
    return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def _image_requeue(image: Image, *, note: str = "", delay: int = 0) -> None:
    """Inside a transaction: back to queued with a fresh task (created in the same commit)."""
    from gallery.tasks import generate_image

    task = generate_image
    if delay:
        task = task.using(run_after=timezone.now() + timedelta(seconds=delay))
    result = task.enqueue(image_id=image.pk)
    image.status = Image.Status.QUEUED
    image.progress = 0
    image.error = note
    image.task_id = str(result.id)
    image.save(update_fields=["status", "progress", "error", "task_id", "updated_at"])
    _broadcast_after_commit(image)


def _task_status(task_id: str) -> str | None:
    """The django-tasks status of a job, or None when the backend has no record of it."""
    from django_tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch

    from gallery.tasks import generate_image

    if not task_id:
        return None
    try:
        return str(generate_image.get_result(task_id).status)
    except (TaskResultDoesNotExist, TaskResultMismatch, NotImplementedError, ValueError):
        return None


def _is_lost(image: Image, cutoff: datetime) -> bool:
    status = _task_status(image.task_id)
    if status in ("SUCCESSFUL", "FAILED"):
        return True  # the job ended without finishing the image
    old = image.updated_at < cutoff
    if image.status == Image.Status.GENERATING:
        return old  # progress is the heartbeat: none for this long means the worker died
    # Queued: waiting in a backed-up queue is fine; a job nobody holds, or one claimed by
    # a worker that never started it, is not.
    return old and status in (None, "RUNNING")


def image_requeue_stale(*, now: datetime | None = None) -> list[Image]:
    """Re-enqueue (or, after MAX_ATTEMPTS, fail) images whose worker was lost.

    Every generating image is looked at (as many as there are workers, normally), then
    every queued one old enough to be lost: however long a backed-up queue grows, an
    image lost behind it is found. A queued one younger than the job timeout waits for
    the next run even if its job already ended."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.IMAGE_JOB_TIMEOUT_SECONDS)
    handled: list[Image] = []
    fields = ("pk", "status", "task_id", "updated_at")
    generating = Image.objects.filter(status=Image.Status.GENERATING)
    queued = Image.objects.filter(status=Image.Status.QUEUED, updated_at__lt=cutoff)
    # Read whole before the loop writes: SQLite's cursors see their own writes.
    candidates = [
        *generating.order_by("updated_at").only(*fields),
        *queued.order_by("updated_at").only(*fields),
    ]
    for candidate in candidates:
        if not _is_lost(candidate, cutoff):
            continue
        with transaction.atomic():
            image = Image.objects.select_for_update().filter(pk=candidate.pk).first()
            if (
                image is None
                or image.status != candidate.status
                or image.task_id != candidate.task_id
                or image.updated_at != candidate.updated_at
            ):
                continue  # it moved on while we looked
            if image.attempts >= MAX_ATTEMPTS:
                image.status = Image.Status.FAILED
                image.error = (
                    "The generator stopped before finishing "
                    f"(attempt {image.attempts} of {MAX_ATTEMPTS})."
                )
                image.save(update_fields=["status", "error", "updated_at"])
                _broadcast_after_commit(image)
            else:
                _image_requeue(image)
            logger.warning("Image %s was stale; now %s", image.pk, image.status)
            handled.append(image)
    return handled


def unfinished_images_exist() -> bool:
    return Image.objects.filter(status__in=[Image.Status.QUEUED, Image.Status.GENERATING]).exists()
