"""Generating images in the background: the render service, stale-job rescue, the
progress relay, and the real django-tasks worker process (including one killed mid-job)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings as django_settings
from django.core.management import call_command
from django.utils import timezone
from django_tasks_db.models import DBTaskResult
from PIL import Image as PILImage

from artterminal.groups import terminal_group_name
from gallery import generation, relay, services
from gallery.models import Image, Terminal
from gallery.providers import ImageProviderError
from gallery.tasks import reap_stale_images, schedule_reaper

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def small_images(settings: Any) -> None:
    settings.IMAGE_SIZE = 128
    settings.IMAGE_PROVIDER = "local"


@pytest.fixture
def listen() -> Callable[[int], Callable[[], list[dict[str, Any]]]]:
    """Join a terminal's group on the in-memory layer; return a drain of what arrived."""
    layer = get_channel_layer()

    def join(terminal_id: int) -> Callable[[], list[dict[str, Any]]]:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(terminal_group_name(terminal_id), channel)

        async def drain() -> list[dict[str, Any]]:
            messages = []
            while True:
                try:
                    messages.append(await asyncio.wait_for(layer.receive(channel), 0.05))
                except TimeoutError:
                    return messages

        return async_to_sync(drain)

    return join


def queued_image(owner: Any, terminal: Terminal | None = None, **extra: Any) -> Image:
    return Image.objects.create(
        owner=owner,
        terminal=terminal,
        prompt=extra.pop("prompt", "a red fox under a blue moon"),
        provider=extra.pop("provider", "local"),
        seed=7,
        **extra,
    )


def age(image: Image, seconds: float) -> None:
    Image.objects.filter(pk=image.pk).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def test_render_stores_the_picture_and_thumbnail_and_shows_it_on_an_empty_terminal(
    owner: Any,
    make_terminal: Callable[..., Terminal],
    listen: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    terminal = make_terminal(images=0)
    image = queued_image(owner, terminal)
    drain = listen(terminal.pk)
    with django_capture_on_commit_callbacks(execute=True):
        generation.image_render(image_id=image.pk, task_id="task-1")

    image.refresh_from_db()
    assert image.status == Image.Status.READY
    assert (image.progress, image.attempts, image.error) == (100, 1, "")
    assert (image.width, image.height) == (128, 128)
    assert image.title == "Red Fox and Blue Moon"
    assert image.description == "A red fox beneath a blue moon, on a night sky."
    assert Path(image.file.path).is_file()
    assert Path(image.file.path).is_relative_to(Path(django_settings.MEDIA_ROOT))
    with PILImage.open(image.thumbnail.path) as thumb:
        assert thumb.format in ("WEBP", "JPEG")
        assert max(thumb.size) <= 320

    terminal.refresh_from_db()
    assert terminal.current_image_id == image.pk
    assert terminal.version == 1
    messages = drain()
    statuses = [m["image"]["status"] for m in messages if m["type"] == "image.progress"]
    assert statuses[0] == "generating"
    assert statuses[-1] == "ready"
    states = [m for m in messages if m["type"] == "terminal.state"]
    assert [s["version"] for s in states] == [1]
    assert json.loads(states[0]["state"])["image"]["id"] == image.pk


def test_a_terminal_already_showing_something_keeps_it(
    owner: Any, make_terminal: Callable[..., Terminal]
) -> None:
    terminal = make_terminal(images=1)
    before = (terminal.current_image_id, terminal.version)
    image = queued_image(owner, terminal)
    generation.image_render(image_id=image.pk)
    terminal.refresh_from_db()
    assert (terminal.current_image_id, terminal.version) == before


def test_progress_is_recorded_and_broadcast_while_drawing(
    owner: Any, make_terminal: Callable[..., Terminal], listen: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(generation, "PROGRESS_INTERVAL_SECONDS", 0.0)
    terminal = make_terminal(images=0)
    drain = listen(terminal.pk)
    image = queued_image(owner, terminal)
    generation.image_render(image_id=image.pk)
    progress = [m["image"]["progress"] for m in drain() if m["image"]["status"] == "generating"]
    assert len(progress) >= 3
    assert progress == sorted(progress)
    assert 0 < progress[-1] < 100


def test_a_provider_error_fails_the_image_with_a_readable_reason(owner: Any, settings: Any) -> None:
    settings.OPENAI_API_KEY = ""
    image = queued_image(owner, provider="openai")
    generation.image_render(image_id=image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.FAILED
    assert image.error == "The OpenAI image generator is selected but no API key is set."
    assert not image.file


def test_a_superseded_task_draws_nothing(owner: Any) -> None:
    image = queued_image(owner, task_id="the-current-task")
    assert generation.image_render(image_id=image.pk, task_id="an-old-task") is None
    image.refresh_from_db()
    assert (image.status, image.attempts) == (Image.Status.QUEUED, 0)


def test_finished_or_missing_images_are_left_alone(owner: Any) -> None:
    failed = queued_image(owner, status=Image.Status.FAILED, error="no")
    assert generation.image_render(image_id=failed.pk) is None
    assert generation.image_render(image_id=999_999) is None
    failed.refresh_from_db()
    assert (failed.status, failed.error) == (Image.Status.FAILED, "no")


def test_stale_generating_images_are_requeued_then_failed_after_three_attempts(
    owner: Any, settings: Any
) -> None:
    settings.IMAGE_JOB_TIMEOUT_SECONDS = 60
    stale = queued_image(owner, status=Image.Status.GENERATING, attempts=1, task_id="lost")
    fresh = queued_image(owner, status=Image.Status.GENERATING, attempts=1, task_id="alive")
    spent = queued_image(owner, status=Image.Status.GENERATING, attempts=3, task_id="lost-3")
    age(stale, 120)
    age(spent, 120)

    handled = generation.image_requeue_stale()

    assert {i.pk for i in handled} == {stale.pk, spent.pk}
    stale.refresh_from_db()
    assert stale.status == Image.Status.QUEUED
    job = DBTaskResult.objects.get(id=stale.task_id)
    assert job.task_path == "gallery.tasks.generate_image"
    assert job.args_kwargs["kwargs"] == {"image_id": stale.pk}
    spent.refresh_from_db()
    assert spent.status == Image.Status.FAILED
    assert spent.error == "The generator stopped before finishing (attempt 3 of 3)."
    fresh.refresh_from_db()
    assert fresh.status == Image.Status.GENERATING


def test_a_backed_up_queue_is_not_stale_but_a_job_nobody_holds_is(
    owner: Any, settings: Any
) -> None:
    from gallery.tasks import generate_image

    settings.IMAGE_JOB_TIMEOUT_SECONDS = 60
    waiting = queued_image(owner)
    waiting.task_id = str(generate_image.enqueue(image_id=waiting.pk).id)
    waiting.save()
    orphan = queued_image(owner, task_id="")
    age(waiting, 600)
    age(orphan, 600)
    assert [i.pk for i in generation.image_requeue_stale()] == [orphan.pk]
    orphan.refresh_from_db()
    assert DBTaskResult.objects.filter(id=orphan.task_id, status="READY").exists()


def test_one_reaper_waits_in_the_queue_at_a_time(db: None) -> None:
    schedule_reaper()
    schedule_reaper()
    waiting = DBTaskResult.objects.filter(task_path=reap_stale_images.module_path)
    assert waiting.count() == 1
    assert waiting.get().run_after > timezone.now()


def test_reap_images_command_rescues_and_reports(owner: Any, settings: Any, capsys: Any) -> None:
    settings.IMAGE_JOB_TIMEOUT_SECONDS = 60
    stale = queued_image(owner, status=Image.Status.GENERATING, attempts=1, task_id="lost")
    age(stale, 120)
    call_command("reap_images")
    assert "Rescued 1 stale image job(s)." in capsys.readouterr().out
    stale.refresh_from_db()
    assert stale.status == Image.Status.QUEUED


# --- the relay (in-memory layer, progress written by another process) ------------------


@pytest.mark.django_db(transaction=True)
async def test_relay_carries_database_changes_to_terminal_viewers(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = await database_sync_to_async(make_terminal)(images=0)
    image = await database_sync_to_async(queued_image)(owner, terminal)
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(terminal_group_name(terminal.pk), channel)
    await relay.ensure_image_relay()
    first = relay._relays[asyncio.get_running_loop()]
    await relay.ensure_image_relay()
    assert relay._relays[asyncio.get_running_loop()] is first, "one relay per event loop"
    try:
        await asyncio.sleep(0.1)
        # What the worker process writes, without any broadcast reaching this process:
        await database_sync_to_async(
            lambda: Image.objects.filter(pk=image.pk).update(
                status=Image.Status.GENERATING, progress=40, updated_at=timezone.now()
            )
        )()
        message = await asyncio.wait_for(layer.receive(channel), 3)
        assert message["type"] == "image.progress"
        assert (message["image"]["id"], message["image"]["progress"]) == (image.pk, 40)

        await database_sync_to_async(_finish_as_worker)(image.pk, terminal.pk)
        message = await asyncio.wait_for(layer.receive(channel), 3)
        assert (message["type"], message["image"]["status"]) == ("image.progress", "ready")
        state = await asyncio.wait_for(layer.receive(channel), 3)
        assert state["type"] == "terminal.state"
        assert (state["version"], json.loads(state["state"])["image"]["id"]) == (1, image.pk)
        with pytest.raises(TimeoutError):  # nothing is sent twice
            await asyncio.wait_for(layer.receive(channel), 1.2)
    finally:
        await relay.stop_image_relay()


def _finish_as_worker(image_id: int, terminal_id: int) -> None:
    Image.objects.filter(pk=image_id).update(
        status=Image.Status.READY, progress=100, updated_at=timezone.now()
    )
    Terminal.objects.filter(pk=terminal_id).update(current_image_id=image_id, version=1)


@pytest.mark.django_db(transaction=True)
async def test_relay_carries_a_change_that_commits_after_a_newer_timestamp(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    """`updated_at` is taken when a row is saved, not when its transaction commits: the
    worker finishing image A saves it at t1, then (still in its transaction) makes it the
    terminal's picture; meanwhile a web request queues image B at t2 > t1 and commits
    first. A poll between the two commits moves the relay's cursor to t2, and A's
    `ready` (t1) is never relayed: viewers in this process never hear it is ready."""
    terminal = await database_sync_to_async(make_terminal)(images=0)
    first = await database_sync_to_async(queued_image)(owner, terminal)
    second = await database_sync_to_async(queued_image)(owner, terminal)
    layer = get_channel_layer()
    image_relay = relay.ImageRelay(layer)
    t1 = timezone.now() + timedelta(seconds=1)
    t2 = t1 + timedelta(milliseconds=5)

    def commit(image_id: int, status: str, at: Any) -> None:
        Image.objects.filter(pk=image_id).update(status=status, updated_at=at)

    await database_sync_to_async(commit)(second.pk, Image.Status.QUEUED, t2)  # B commits
    assert await image_relay.poll_once() == 1
    await database_sync_to_async(commit)(first.pk, Image.Status.READY, t1)  # A commits
    assert await image_relay.poll_once() == 1, "A's ready was skipped by the cursor"


async def test_relay_stays_off_with_a_shared_channel_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "artterminal.layers.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": ["redis://127.0.0.1:1"]},
        }
    }
    await relay.ensure_image_relay()
    assert asyncio.get_running_loop() not in relay._relays


# --- the real worker process -----------------------------------------------------------


class Site:
    """A throwaway site database and media folder shared with worker subprocesses."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.db = tmp_path / "db.sqlite3"
        self.media = tmp_path / "media"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE", "TASKS_BACKEND")
        }
        self.env.update(
            DATABASE_URL=f"sqlite:///{self.db}",
            MEDIA_ROOT=str(self.media),
            DEBUG="true",
            IMAGE_PROVIDER="local",
            PYTHONUNBUFFERED="1",
            **env,
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done.stdout.decode()

    def migrate_and_enqueue(self, prompt: str) -> int:
        """Migrate the fresh database and ask for one image, in one process start."""
        script = (
            "from django.core.management import call_command\n"
            "call_command('migrate', interactive=False, verbosity=0)\n"
            "from django.contrib.auth import get_user_model\n"
            "from gallery import services\n"
            "from gallery.models import Terminal\n"
            "user = get_user_model().objects.create_user('maker', password='a-long-password')\n"
            "terminal = Terminal.objects.create(slug='hall', name='Hall', owner=user)\n"
            f"image = services.image_generate(owner=user, prompt={prompt!r}, terminal=terminal)\n"
            "print('IMAGE', image.pk)\n"
        )
        out = self.manage("shell", "-c", script)
        return int(out.split("IMAGE", 1)[1].split()[0])

    def start_worker(self) -> subprocess.Popen[bytes]:
        worker = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--queue-name",
                "*",
                "--interval",
                "0.1",
                "--no-startup-delay",
                "--no-reload",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers.append(worker)
        return worker

    def image(self, image_id: int) -> dict[str, Any]:
        with sqlite3.connect(self.db, timeout=10) as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute("SELECT * FROM gallery_image WHERE id = ?", (image_id,)).fetchone()
            return dict(row)

    def current_image(self) -> int | None:
        with sqlite3.connect(self.db, timeout=10) as conn:
            return conn.execute("SELECT current_image_id FROM gallery_terminal").fetchone()[0]

    def wait_for(
        self, image_id: int, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.image(image_id)
            if predicate(row):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"image stuck: {row['status']} ({row['error']})")
            time.sleep(0.01)

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=10)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(**env: str) -> Site:
        made.append(Site(tmp_path, **env))
        return made[-1]

    yield make
    for s in made:
        s.stop()


@pytest.mark.slow
def test_the_worker_process_generates_an_enqueued_image(site: Callable[..., Site]) -> None:
    s = site(IMAGE_SIZE="256")
    image_id = s.migrate_and_enqueue("a cat on a snowy hill with pine trees at night")
    assert s.image(image_id)["status"] == "queued"
    s.start_worker()
    row = s.wait_for(image_id, lambda r: r["status"] in ("ready", "failed"), timeout=20)
    assert row["status"] == "ready", row["error"]
    assert (row["width"], row["height"], row["attempts"]) == (256, 256, 1)
    assert (s.media / row["file"]).is_file()
    assert (s.media / row["thumbnail"]).is_file()
    assert s.current_image() == image_id


@pytest.mark.slow
def test_a_worker_killed_mid_job_leaves_no_image_generating_forever(
    site: Callable[..., Site],
) -> None:
    # A big picture gives the kill time to land mid-drawing; a short timeout lets the
    # next worker's scheduled reaper notice the lost job quickly.
    s = site(IMAGE_SIZE="1024", IMAGE_JOB_TIMEOUT_SECONDS="2")
    image_id = s.migrate_and_enqueue("a red fox under a blue moon with mountains and trees")
    first = s.start_worker()
    s.wait_for(image_id, lambda r: r["status"] != "queued", timeout=20)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    killed = s.image(image_id)
    assert killed["status"] == "generating", "the kill must land mid-job"
    assert killed["attempts"] == 1

    s.start_worker()
    row = s.wait_for(image_id, lambda r: r["status"] in ("ready", "failed"), timeout=25)
    assert row["status"] == "ready", row["error"]
    assert row["attempts"] == 2
    assert row["task_id"] != killed["task_id"]
    assert (s.media / row["file"]).is_file()


class _Refusing:
    """A provider refusing as an upstream rate limit does, asking for `retry_after` s."""

    name = "local"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after

    def generate(self, **kwargs: Any) -> Any:
        raise ImageProviderError(
            "rate_limited",
            "The image service is busy right now. Try again in 10 minutes.",
            retryable=True,
            retry_after=self.retry_after,
        )


def test_a_retry_waits_as_long_as_the_upstream_asked(
    owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(generation, "get_provider", lambda name=None: _Refusing(600))
    image = queued_image(owner)
    before = timezone.now()
    generation.image_render(image_id=image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.QUEUED
    assert image.error == "The image service is busy right now. Trying again in 10 minutes."
    retry = DBTaskResult.objects.get(id=image.task_id)
    assert retry.run_after >= before + timedelta(seconds=600)


def test_an_upstream_asking_for_a_long_wait_fails_the_image_now(
    owner: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queued for hours, the picture would look stuck: the person is told when to retry.
    monkeypatch.setattr(
        generation,
        "get_provider",
        lambda name=None: _Refusing(generation.MAX_RETRY_DELAY_SECONDS + 1),
    )
    image = queued_image(owner)
    generation.image_render(image_id=image.pk)
    image.refresh_from_db()
    assert image.status == Image.Status.FAILED
    assert image.error == "The image service is busy right now. Try again in 10 minutes."
    assert not DBTaskResult.objects.filter(task_path__endswith="generate_image").exists()


# --- A worker faster than the request that queued the job --------------------------------


@pytest.fixture
def eager_worker(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A worker that runs the first generate_image job the moment it is enqueued, before
    the enqueueing code has written the job's id to the image (a real worker can);
    returns the ids of the jobs it ran."""
    from django_tasks_db.backend import DatabaseBackend

    enqueue = DatabaseBackend.enqueue
    ran: list[str] = []

    def enqueue_and_run(self: Any, task: Any, args: Any, kwargs: Any) -> Any:
        result: Any = enqueue(self, task, args, kwargs)
        if task.name == "generate_image" and not ran:
            ran.append(str(result.id))
            generation.image_render(image_id=kwargs["image_id"], task_id=str(result.id))
        return result

    monkeypatch.setattr(DatabaseBackend, "enqueue", enqueue_and_run)
    return ran


def test_a_regenerated_image_is_drawn_even_by_an_eager_worker(
    owner: Any, eager_worker: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    image = queued_image(owner, status=Image.Status.FAILED, attempts=3, task_id="the-old-job")
    with django_capture_on_commit_callbacks(execute=True):
        services.image_regenerate(image=image)
    image.refresh_from_db()
    # Before, the new job met the old job's id, took itself for superseded and drew
    # nothing: the image sat queued until the reaper came.
    assert (image.status, image.task_id) == (Image.Status.READY, eager_worker[0])
    assert image.attempts == 1  # a fresh set: it was 3, all spent


def test_a_retry_queued_before_the_job_id_was_written_is_kept(
    owner: Any,
    eager_worker: list[str],
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    monkeypatch.setattr(generation, "get_provider", lambda name=None: _Refusing(15))
    with django_capture_on_commit_callbacks(execute=True):
        image = services.image_generate(owner=owner, prompt="a red fox")
    image.refresh_from_db()
    # The first job failed for now and queued a retry; the request's late write of the
    # first job's id used to replace the retry's, which then took itself for superseded.
    retry = DBTaskResult.objects.exclude(id=eager_worker[0]).get(task_path__endswith="image")
    assert (image.status, image.task_id) == (Image.Status.QUEUED, str(retry.id))
    monkeypatch.undo()
    generation.image_render(image_id=image.pk, task_id=str(retry.id))
    image.refresh_from_db()
    assert image.status == Image.Status.READY


def test_only_a_failed_image_is_generated_again(owner: Any) -> None:
    for status in (Image.Status.QUEUED, Image.Status.GENERATING, Image.Status.READY):
        image = queued_image(owner, status=status, task_id="its-job")
        with pytest.raises(services.InvalidRequest) as refused:
            services.image_regenerate(image=image)
        assert refused.value.code == "image_not_failed"
        image.refresh_from_db()
        assert (image.status, image.task_id) == (status, "its-job")
    assert not DBTaskResult.objects.exists()


def test_a_picture_that_cannot_be_stored_fails_the_image_and_leaves_no_file(
    owner: Any, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    from django.core.files.storage import FileSystemStorage

    save = FileSystemStorage._save  # type: ignore[attr-defined]

    def disk_full_at_the_thumbnail(self: Any, name: str, content: Any) -> str:
        if name.endswith(".webp"):
            raise OSError(28, "No space left on device")
        return save(self, name, content)

    monkeypatch.setattr(FileSystemStorage, "_save", disk_full_at_the_thumbnail)
    image = queued_image(owner)
    with pytest.raises(OSError):
        generation.image_render(image_id=image.pk, task_id="the-job")
    image.refresh_from_db()
    # Before, it stayed "generating" for the reaper to draw again, up to three times.
    assert (image.status, image.error) == (Image.Status.FAILED, generation.STORE_FAILURE)
    assert not list(Path(settings.MEDIA_ROOT).rglob(f"image-{image.pk}-*"))


def test_a_lost_job_is_found_behind_a_long_backlog(owner: Any, settings: Any) -> None:
    from gallery.tasks import generate_image

    settings.IMAGE_JOB_TIMEOUT_SECONDS = 60
    for number in range(250):  # older than the lost one, and all rightly waiting
        image = queued_image(owner, prompt=f"waiting picture {number}")
        job = generate_image.enqueue(image_id=image.pk)
        Image.objects.filter(pk=image.pk).update(task_id=str(job.id))
        age(image, 7200)
    lost = queued_image(owner, status=Image.Status.GENERATING, attempts=1, task_id="dead")
    age(lost, 120)

    assert [image.pk for image in generation.image_requeue_stale()] == [lost.pk]
    lost.refresh_from_db()
    assert lost.status == Image.Status.QUEUED


def test_stored_pictures_cannot_be_found_by_counting_ids(owner: Any) -> None:
    """Media is served without a rights check (by the proxy in production): the names of
    a private terminal's pictures must not follow from their ids."""
    names = []
    for _ in range(2):
        image = queued_image(owner)
        generation.image_render(image_id=image.pk)
        image.refresh_from_db()
        png, webp = Path(str(image.file.name)), Path(str(image.thumbnail.name))
        assert re.fullmatch(rf"image-{image.pk}-[\w-]{{22}}", png.stem), png
        assert webp.stem == png.stem
        names.append(png.stem.removeprefix(f"image-{image.pk}-"))
    assert names[0] != names[1]
