"""Writes to the gallery. Each service runs in one transaction and broadcasts after commit,
so no viewer ever sees state that could still roll back."""

from __future__ import annotations

import random
from typing import Any, Literal

from django.conf import settings
from django.db import transaction

from artterminal.ratelimit import minutes_text, rate_limit_hit
from gallery import broadcast, selectors
from gallery.models import Image, Terminal

NavigateAction = Literal["next", "previous", "first", "last", "goto", "position", "search"]
NAVIGATE_ACTIONS: tuple[str, ...] = (
    "next",
    "previous",
    "first",
    "last",
    "goto",
    "position",
    "search",
)
MAX_PROMPT_LENGTH = 1000
# An edit's prompt is the source's plus the instruction: this leaves the source half.
MAX_INSTRUCTION_LENGTH = 500


class GalleryError(Exception):
    """A request the gallery refuses; `code` is stable, `message` is for people."""

    code = "gallery_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class NotAllowed(GalleryError):
    code = "forbidden"


class NotFound(GalleryError):
    code = "not_found"


class InvalidRequest(GalleryError):
    code = "invalid"


class RateLimited(GalleryError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def terminal_navigate(
    *,
    terminal_id: int,
    user: selectors.AnyUser,
    action: str,
    image_id: int | None = None,
    position: int | None = None,
    query: str = "",
) -> Terminal:
    """Move a terminal to another of its images and bump its version by exactly one;
    returns the terminal as moved. Terminal.DoesNotExist when it is gone.

    The terminal row is locked for the read-modify-write, so two controllers racing
    each get their own version and neither update is lost. Who may drive it is read
    from that locked row: an owner changed a moment ago counts, and the caller need
    not read the terminal first (the terminal socket calls this on every command).
    """
    if action not in NAVIGATE_ACTIONS:
        raise InvalidRequest(f"Unknown navigation action “{action}”.", code="invalid_action")

    with transaction.atomic():
        locked = Terminal.objects.select_for_update().get(pk=terminal_id)
        if not selectors.terminal_can_control(user=user, terminal=locked):
            raise NotAllowed("You may watch this terminal but not control it.")
        images = selectors.terminal_images(terminal=locked)
        target = _navigation_target(
            locked, images, action=action, image_id=image_id, position=position, query=query
        )
        locked.current_image = target
        locked.version += 1
        locked.save(update_fields=["current_image", "version"])
    # The state is read after the write lock is released, which keeps the write short;
    # its version and image are the ones just committed, held in `locked`.
    state = selectors.terminal_state(terminal=locked)
    transaction.on_commit(lambda: broadcast.terminal_state(terminal_id=locked.pk, state=state))
    return locked


def _navigation_target(
    terminal: Terminal,
    images: Any,
    *,
    action: str,
    image_id: int | None,
    position: int | None,
    query: str,
) -> Image:
    """The image `action` lands on, in one query (two when "next" or "previous" wraps
    around); more only on the way to an error."""
    current_id = terminal.current_image_id
    found: Image | None
    if action == "next" and current_id:
        found = images.filter(id__gt=current_id).first() or images.first()  # wraps around
    elif action in ("next", "first"):
        found = images.first()
    elif action == "previous" and current_id:
        found = images.filter(id__lt=current_id).last() or images.last()
    elif action in ("previous", "last"):
        found = images.last()
    elif action == "goto":
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise _refusal(
                images,
                InvalidRequest("“goto” needs a numeric image_id.", code="invalid_image_id"),
            )
        found = images.filter(id=image_id).first()
        if found is None:
            raise _refusal(
                images, NotFound("That image is not on this terminal.", code="image_not_found")
            )
    elif action == "position":
        found = None
        if isinstance(position, int) and not isinstance(position, bool) and position >= 1:
            found = next(iter(images[position - 1 : position]), None)
        if found is None:
            count = images.count()
            raise _refusal(
                images,
                InvalidRequest(
                    f"Position must be a number from 1 to {count}.", code="invalid_position"
                ),
                empty=count == 0,
            )
    else:
        words = query.split()[:8]
        if not words:
            raise _refusal(images, InvalidRequest("Say what to search for.", code="invalid_query"))
        matches = images
        for word in words:
            matches = matches.filter(prompt__icontains=word)
        found = matches.last()
        if found is None:
            raise _refusal(
                images,
                NotFound(
                    f"No image on this terminal matches “{' '.join(words)}”.", code="no_match"
                ),
            )
    if found is None:
        raise _empty_terminal()
    return found


def _refusal(images: Any, error: GalleryError, *, empty: bool | None = None) -> GalleryError:
    """`error`, unless the terminal has no images at all: that is said first, whatever
    else was wrong, as when it was checked before anything else."""
    if empty is None:
        empty = not images.exists()
    return _empty_terminal() if empty else error


def _empty_terminal() -> NotFound:
    return NotFound("This terminal has no images yet.", code="empty_terminal")


def image_generate(
    *,
    owner: Any,
    prompt: str,
    style: str = "",
    terminal: Terminal | None = None,
    source: Image | None = None,
    seed: int | None = None,
) -> Image:
    """Record a queued image and enqueue its generation once the row is committed."""
    prompt = " ".join(prompt.split())
    if not prompt:
        raise InvalidRequest("Describe the picture you want.", code="empty_prompt")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise InvalidRequest(
            f"Keep the description under {MAX_PROMPT_LENGTH} characters.", code="prompt_too_long"
        )
    if terminal is not None and not selectors.terminal_can_control(user=owner, terminal=terminal):
        raise NotAllowed("Only the terminal's controllers may add images to it.")
    _image_allowance_take(owner)
    with transaction.atomic():
        image = Image.objects.create(
            owner=owner,
            prompt=prompt,
            style=style.strip()[:40],
            terminal=terminal,
            source=source,
            provider=settings.IMAGE_PROVIDER,
            seed=seed if seed is not None else random.randrange(2**31),
        )
        transaction.on_commit(lambda: _enqueue_generation(image))
        transaction.on_commit(lambda: broadcast.image_changed(image=image))
    return image


def _image_allowance_take(owner: Any) -> None:
    """Count one picture against the owner's hourly allowance (settings.IMAGES_PER_HOUR),
    or refuse it: every picture drawn upstream is paid for, and a voice session could
    otherwise ask for them as fast as it can talk."""
    limit = settings.IMAGES_PER_HOUR
    if not limit:
        return
    wait = rate_limit_hit(key=f"images:{owner.pk}", limit=limit, window_seconds=3600)
    if wait is not None:
        raise RateLimited(
            f"You have asked for {limit} picture{'s' if limit != 1 else ''} this hour, "
            f"the most allowed. Try again in {minutes_text(wait)}.",
            retry_after=wait,
        )


def image_edit(*, user: Any, image: Image, instruction: str) -> Image:
    """An edit is a new image from the source's prompt plus the instruction, linked back."""
    instruction = " ".join(instruction.split())
    if not instruction:
        raise InvalidRequest("Say how to change the picture.", code="empty_instruction")
    if len(instruction) > MAX_INSTRUCTION_LENGTH:
        raise InvalidRequest(
            f"Keep the change under {MAX_INSTRUCTION_LENGTH} characters.",
            code="instruction_too_long",
        )
    if not image.is_ready:
        raise InvalidRequest("Only a finished image can be edited.", code="image_not_ready")
    # The instruction is the point of the edit: a long source prompt gives way to it,
    # cut at a word.
    room = MAX_PROMPT_LENGTH - len(instruction) - len(", ")
    base = image.prompt
    if len(base) > room:
        cut = base[: room + 1]
        base = (cut.rsplit(" ", 1)[0] if " " in cut else cut[:room]).rstrip(" ,;.")
    return image_generate(
        owner=user,
        prompt=f"{base}, {instruction}",
        style=image.style,
        terminal=image.terminal,
        source=image,
        seed=image.seed,
    )


def _enqueue_generation(image: Image) -> None:
    from gallery.tasks import generate_image

    result = generate_image.enqueue(image_id=image.pk)
    # Only while still blank: a worker may have started the job already (it writes its
    # own id) and even queued a retry under a newer one, which must not be replaced.
    Image.objects.filter(pk=image.pk, task_id="").update(task_id=str(result.id))


def image_regenerate(*, image: Image) -> Image:
    """Queue a failed image's generation again, with a full set of attempts.

    Only a failed one: an unfinished image has a job (or the reaper rescues it), and
    a second job would draw it twice; a finished one would draw the same picture."""
    with transaction.atomic():
        locked = Image.objects.select_for_update().get(pk=image.pk)
        if locked.status != Image.Status.FAILED:
            raise InvalidRequest(
                "Only a failed image can be generated again.", code="image_not_failed"
            )
        locked.status = Image.Status.QUEUED
        locked.progress = 0
        locked.error = ""
        locked.attempts = 0
        # Blank, so the new job is taken for this image's own (gallery.generation).
        locked.task_id = ""
        locked.save(
            update_fields=["status", "progress", "error", "attempts", "task_id", "updated_at"]
        )
        transaction.on_commit(lambda: _enqueue_generation(locked))
        transaction.on_commit(lambda: broadcast.image_changed(image=locked))
    return locked
