"""Rescue images a stopped worker left queued or generating (run before starting workers)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from gallery import generation
from gallery.tasks import schedule_reaper


class Command(BaseCommand):
    help = (
        "Re-enqueue images whose generation was lost with its worker (up to 3 attempts), "
        "or mark them failed with the reason. `make run` runs this before the task worker."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        handled = generation.image_requeue_stale()
        for image in handled:
            self.stdout.write(f"Image {image.pk}: {image.status} {image.error}".rstrip())
        if generation.unfinished_images_exist():
            schedule_reaper()  # images still in flight get checked again once they could be stale
        self.stdout.write(f"Rescued {len(handled)} stale image job(s).")
