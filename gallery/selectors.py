"""Reads of the gallery: who may do what, and what a terminal shows."""

from __future__ import annotations

import functools
import operator
from datetime import datetime
from typing import Any, NamedTuple

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.db.models import Field, Q, QuerySet

from gallery.events import ImageSummary, NeighbourSummary
from gallery.models import Image, Terminal, TerminalMembership

AnyUser = AbstractBaseUser | AnonymousUser


class TerminalRights(NamedTuple):
    can_watch: bool
    can_control: bool


def terminal_can_watch(*, user: AnyUser, terminal: Terminal) -> bool:
    if terminal.is_public:
        return True
    if not user.is_authenticated:
        return False
    if getattr(user, "is_staff", False) or terminal.owner_id == user.pk:
        return True
    return TerminalMembership.objects.filter(terminal=terminal, user_id=user.pk).exists()


def terminal_can_control(*, user: AnyUser, terminal: Terminal) -> bool:
    """Owners, members with the controller role, and staff may drive a terminal."""
    if not user.is_authenticated or not getattr(user, "is_active", False):
        return False
    if getattr(user, "is_staff", False) or terminal.owner_id == user.pk:
        return True
    return TerminalMembership.objects.filter(
        terminal=terminal, user_id=user.pk, role=TerminalMembership.Role.CONTROLLER
    ).exists()


def terminal_rights(*, user: AnyUser, terminal: Terminal) -> TerminalRights:
    """Both rights at once with at most one query, for checks on every broadcast;
    the same rules as `terminal_can_watch` and `terminal_can_control`."""
    if not user.is_authenticated:
        return TerminalRights(can_watch=terminal.is_public, can_control=False)
    active = bool(getattr(user, "is_active", False))
    if getattr(user, "is_staff", False) or terminal.owner_id == user.pk:
        return TerminalRights(can_watch=True, can_control=active)
    role = (
        TerminalMembership.objects.filter(terminal=terminal, user_id=user.pk)
        .values_list("role", flat=True)
        .first()
    )
    return TerminalRights(
        can_watch=terminal.is_public or role is not None,
        can_control=active and role == TerminalMembership.Role.CONTROLLER,
    )


def terminal_images(*, terminal: Terminal) -> QuerySet[Image]:
    """The images a terminal can show, in display order (oldest first)."""
    return Image.objects.filter(terminal=terminal, status=Image.Status.READY).order_by("id")


class _Place(NamedTuple):
    """Where an image stands among a terminal's shown images."""

    before: int  # shown images older than it
    shown: int  # 1 when the image itself is shown on the terminal, else 0
    total: int  # all shown images

    @property
    def position(self) -> int:
        return self.before + self.shown


def _image_place(*, terminal: Terminal, image: Image) -> _Place:
    # Whether `image` itself is shown is read from the row as loaded: callers pass the
    # image they just read (the terminal's current image), so it is as fresh as a count.
    with connection.cursor() as cursor:
        cursor.execute(
            _strip_sql(connection.vendor).counts,
            [image.pk, terminal.pk, Image.Status.READY.value],
        )
        total, before = cursor.fetchone()
    return _Place(
        before=before,
        shown=int(image.terminal_id == terminal.pk and image.is_ready),
        total=total,
    )


def terminal_image_position(*, terminal: Terminal, image: Image) -> int:
    """1-based position of `image` in the terminal's display order."""
    return terminal_images(terminal=terminal).filter(id__lte=image.pk).count()


def image_state(*, terminal: Terminal, image: Image | None) -> ImageSummary | None:
    if image is None:
        return None
    return _image_state(image, _image_place(terminal=terminal, image=image))


def _image_state(image: Image, place: _Place) -> ImageSummary:
    return {
        "id": image.pk,
        "title": image.title or image.prompt[:80],
        "prompt": image.prompt,
        "url": image.file.url if image.file else "",
        "thumbnail_url": image.thumbnail.url if image.thumbnail else "",
        "position": place.position,
        "count": place.total,
    }


def terminal_state(*, terminal: Terminal) -> dict[str, Any]:
    """The `terminal.state` message without what depends on the socket (`viewers`,
    `can_control`): the consumer adds those per viewer. Three queries whatever the
    number of images: one counting statement places the current image, two bounded
    reads fetch its strip, whose positions follow from that place."""
    current = terminal.current_image
    place = None if current is None else _image_place(terminal=terminal, image=current)
    return {
        "type": "terminal.state",
        "version": terminal.version,
        "image": None if current is None or place is None else _image_state(current, place),
        "neighbours": _neighbour_states(terminal=terminal, image=current, place=place),
    }


def neighbour_states(
    *, terminal: Terminal, image: Image | None, radius: int = 3
) -> list[NeighbourSummary]:
    """The strip around the current image (itself included), with display positions."""
    place = None if image is None else _image_place(terminal=terminal, image=image)
    return _neighbour_states(terminal=terminal, image=image, place=place, radius=radius)


def _neighbour_states(
    *, terminal: Terminal, image: Image | None, place: _Place | None, radius: int = 3
) -> list[NeighbourSummary]:
    strip = terminal_neighbours(terminal=terminal, image=image, radius=radius)
    if not strip:
        return []
    # Positions count shown images only, like `image_state`, so a current image that
    # is no longer ready does not shift the numbers of the ones after it. Everything
    # in the strip before `image` is shown, so the first position follows from its place.
    position = 0 if image is None or place is None else place.before - strip.index(image)
    states: list[NeighbourSummary] = []
    for neighbour in strip:
        if neighbour is not image or (place is not None and place.shown):
            position += 1
        states.append(
            {
                "id": neighbour.pk,
                "title": neighbour.title or neighbour.prompt[:80],
                "thumbnail_url": neighbour.thumbnail.url if neighbour.thumbnail else "",
                "position": position,
            }
        )
    return states


# What a strip entry shows; the rest of each row stays in the database.
STRIP_FIELDS = ("id", "terminal_id", "status", "title", "prompt", "thumbnail")


def terminal_neighbours(*, terminal: Terminal, image: Image | None, radius: int = 3) -> list[Image]:
    """A strip of images around the current one, for the terminal page; the neighbours
    carry STRIP_FIELDS only."""
    sql, shown = _strip_sql(connection.vendor), [terminal.pk, Image.Status.READY.value]
    if image is None:
        return list(Image.objects.raw(sql.first, [*shown, radius * 2 + 1]))
    before = list(Image.objects.raw(sql.before, [*shown, image.pk, radius]))[::-1]
    after = list(Image.objects.raw(sql.after, [*shown, image.pk, radius]))
    return [*before, image, *after]


class _StripSQL(NamedTuple):
    counts: str  # params: image id, terminal id, status
    before: str  # terminal id, status, image id, how many
    after: str  # terminal id, status, image id, how many
    first: str  # terminal id, status, how many


@functools.cache
def _strip_sql(vendor: str) -> _StripSQL:
    """The statements behind a terminal's state, which every navigation reads: built
    by the ORM, each took ~0.2 ms to compile and ~15 µs to run (bench fanout), so
    they are written once per database vendor from the model's table and columns.
    They select what `terminal_images` does: the terminal's ready images, by id."""
    meta, quote = Image._meta, connection.ops.quote_name

    def column(name: str) -> str:
        field = meta.get_field(name)
        assert isinstance(field, Field) and field.column, name
        return quote(field.column)

    table, pk = quote(meta.db_table), column("id")
    shown = f"FROM {table} WHERE {column('terminal')} = %s AND {column('status')} = %s"
    strip = f"SELECT {', '.join(column(name) for name in STRIP_FIELDS)} {shown}"
    return _StripSQL(
        counts=f"SELECT COUNT(*), COUNT(CASE WHEN {pk} < %s THEN 1 END) {shown}",
        before=f"{strip} AND {pk} < %s ORDER BY {pk} DESC LIMIT %s",
        after=f"{strip} AND {pk} > %s ORDER BY {pk} LIMIT %s",
        first=f"{strip} ORDER BY {pk} LIMIT %s",
    )


def gallery_images(*, query: str = "", owner: AnyUser | None = None) -> QuerySet[Image]:
    """Images for the gallery grid, newest first, optionally searched by prompt."""
    images = Image.objects.select_related("owner")
    if owner is not None:
        images = images.filter(owner_id=owner.pk)
    else:
        images = images.filter(status=Image.Status.READY)
    for word in query.split()[:8]:
        images = images.filter(Q(prompt__icontains=word) | Q(title__icontains=word))
    return images


def terminals_visible_to(*, user: AnyUser) -> QuerySet[Terminal]:
    terminals = Terminal.objects.select_related("current_image")
    if getattr(user, "is_staff", False):
        return terminals
    if not user.is_authenticated:
        return terminals.filter(is_public=True)
    return terminals.filter(
        Q(is_public=True) | Q(owner_id=user.pk) | Q(memberships__user_id=user.pk)
    ).distinct()


def terminals_controlled_by(*, user: AnyUser) -> QuerySet[Terminal]:
    if not user.is_authenticated:
        return Terminal.objects.none()
    if getattr(user, "is_staff", False):
        return Terminal.objects.all()
    return Terminal.objects.filter(
        Q(owner_id=user.pk)
        | Q(memberships__user_id=user.pk, memberships__role=TerminalMembership.Role.CONTROLLER)
    ).distinct()


def image_can_view(*, user: AnyUser, image: Image) -> bool:
    """An image shows to whoever may watch its terminal; an image made outside any
    terminal shows to everyone once ready, and to its owner and staff before that."""
    terminal = image.terminal
    if terminal is not None:
        return terminal_can_watch(user=user, terminal=terminal)
    if image.is_ready:
        return True
    return user.is_authenticated and (
        image.owner_id == user.pk or bool(getattr(user, "is_staff", False))
    )


def images_visible_to(*, user: AnyUser, images: QuerySet[Image]) -> QuerySet[Image]:
    """`images` without those made for terminals the user may not watch."""
    if getattr(user, "is_staff", False):
        return images
    return images.filter(
        Q(terminal__isnull=True) | Q(terminal__in=terminals_visible_to(user=user).values("pk"))
    )


def terminal_jobs_news(*, terminal_id: int, failed_since: datetime, limit: int = 10) -> list[Image]:
    """What a page that was away needs to bring its "In the works" list up to date: the
    pictures still being made for the terminal, and those that failed since
    `failed_since` (a job that is neither has finished, or is gone). Oldest first."""
    making = Image.objects.filter(
        terminal_id=terminal_id, status__in=[Image.Status.QUEUED, Image.Status.GENERATING]
    )
    failed = Image.objects.filter(
        terminal_id=terminal_id, status=Image.Status.FAILED, updated_at__gte=failed_since
    )
    found = [*making.order_by("id")[:limit], *failed.order_by("-id")[:limit]]
    return sorted(found, key=operator.attrgetter("pk"))


def terminal_images_in_progress(*, terminal: Terminal, limit: int = 10) -> QuerySet[Image]:
    """Pictures being made for `terminal`, oldest first: its page's "In the works" list
    when it opens (after that, progress arrives over the socket)."""
    return Image.objects.filter(
        terminal=terminal, status__in=[Image.Status.QUEUED, Image.Status.GENERATING]
    ).order_by("id")[:limit]
