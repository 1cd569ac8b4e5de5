"""The terminal state's hand-written statements (gallery.selectors._strip_sql) against
the rule they encode, `terminal_images`: run in-process on SQLite and, through a
fresh process, on PostgreSQL (tests/scale)."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from gallery import selectors
from gallery.models import Image, Terminal

RADIUS = 3


def build_mixed_terminals(slug: str) -> Terminal:
    """A terminal whose images interleave with another terminal's and with images of
    its own that are not shown (failed, generating), some untitled."""
    owner, _ = get_user_model().objects.get_or_create(username=f"{slug}-owner")
    terminal = Terminal.objects.create(slug=slug, name=slug, owner=owner)
    other = Terminal.objects.create(slug=f"{slug}-other", name=f"{slug} other", owner=owner)
    statuses = [Image.Status.READY, Image.Status.READY, Image.Status.FAILED]
    for number in range(14):
        for where in (terminal, other):
            Image.objects.create(
                owner=owner,
                terminal=where,
                prompt=f"picture {number} of {where.slug}",
                title="" if number % 4 == 0 else f"Picture {number}",
                provider="local",
                status=statuses[number % len(statuses)] if number % 5 else Image.Status.GENERATING,
                thumbnail=f"thumbnails/{where.slug}/{number}.png",
            )
    return terminal


def state_mismatches(terminal: Terminal) -> list[str]:
    """With each of the terminal's images (shown or not) as its current one, the state's
    place and strip against the same read through `terminal_images`."""
    shown = list(selectors.terminal_images(terminal=terminal))
    ids = [image.pk for image in shown]
    problems = []
    for current in [*Image.objects.filter(terminal=terminal).order_by("id"), None]:
        terminal.current_image = current
        state = selectors.terminal_state(terminal=terminal)
        if current is None:
            strip_ids = ids[: RADIUS * 2 + 1]
        else:
            before = [pk for pk in ids if pk < current.pk][-RADIUS:]
            after = [pk for pk in ids if pk > current.pk][:RADIUS]
            strip_ids = [*before, current.pk, *after]
            position = sum(pk < current.pk for pk in ids) + int(current.pk in ids)
            image = state["image"]
            if (image["position"], image["count"]) != (position, len(ids)):
                problems.append(f"{current.pk}: place {image['position']}/{image['count']}")
        strip = state["neighbours"]
        if [n["id"] for n in strip] != strip_ids:
            problems.append(f"{current and current.pk}: strip {[n['id'] for n in strip]}")
        for neighbour in strip:
            row = Image.objects.get(pk=neighbour["id"])
            if neighbour["title"] != (row.title or row.prompt[:80]):
                problems.append(f"{row.pk}: title {neighbour['title']!r}")
            if neighbour["thumbnail_url"] != row.thumbnail.url:
                problems.append(f"{row.pk}: thumbnail {neighbour['thumbnail_url']!r}")
            if neighbour["id"] in ids and neighbour["position"] != ids.index(row.pk) + 1:
                problems.append(f"{row.pk}: position {neighbour['position']}")
    return problems
