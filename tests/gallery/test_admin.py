"""The admin pages staff use to look after images and terminals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from artterminal.groups import terminal_group_name
from gallery.models import Image, Terminal

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user("curator", is_staff=True, is_superuser=True))
    return client


def test_image_list_shows_thumbnails_filters_and_searches(
    staff: Client, make_image: Callable[..., Image], make_user: Callable[..., Any]
) -> None:
    fox = make_image(prompt="a red fox")
    make_image(prompt="a grey owl", owner=make_user("birder"))

    listing = staff.get(reverse("admin:gallery_image_changelist"))
    searched = staff.get(reverse("admin:gallery_image_changelist"), {"q": "fox"})

    html = listing.content.decode()
    assert listing.status_code == 200
    assert f'src="{fox.thumbnail.url}"' in html
    assert "By status" in html and "By provider" in html and "By owner" in html
    assert [image.pk for image in searched.context["cl"].result_list] == [fox.pk]


def test_image_change_page_previews_the_picture(
    staff: Client, make_image: Callable[..., Image]
) -> None:
    image = make_image(prompt="a lighthouse")

    response = staff.get(reverse("admin:gallery_image_change", args=[image.pk]))

    assert response.status_code == 200
    assert f'src="{image.file.url}"' in response.content.decode()


def test_regenerate_action_requeues_failed_images_only(
    staff: Client, make_image: Callable[..., Image], django_capture_on_commit_callbacks: Any
) -> None:
    failed = make_image(prompt="a storm", status=Image.Status.FAILED, error="Upstream timed out.")
    untouched = make_image(prompt="a calm sea")

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            reverse("admin:gallery_image_changelist"),
            {"action": "regenerate", "_selected_action": [failed.pk, untouched.pk]},
            follow=True,
        )

    failed.refresh_from_db()
    untouched.refresh_from_db()
    assert response.status_code == 200
    page = response.content.decode()
    assert "Queued 1 image again." in page
    assert "Left 1 image alone: only failed images can be regenerated." in page
    assert failed.status == Image.Status.QUEUED
    assert failed.error == ""
    assert untouched.status == Image.Status.READY
    job = DBTaskResult.objects.get()
    assert job.args_kwargs["kwargs"] == {"image_id": failed.pk}
    assert failed.task_id == str(job.id)


def test_terminal_pages_preview_the_current_image_and_inline_memberships(
    staff: Client,
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    terminal = make_terminal(slug="lobby", images=2)
    add_member(terminal, make_user("guest"), role="viewer")
    current = terminal.current_image
    assert current is not None

    listing = staff.get(reverse("admin:gallery_terminal_changelist"))
    change = staff.get(reverse("admin:gallery_terminal_change", args=[terminal.pk]))

    assert f'src="{current.thumbnail.url}"' in listing.content.decode()
    html = change.content.decode()
    assert change.status_code == 200
    assert f'src="{current.thumbnail.url}"' in html
    assert "memberships-TOTAL_FORMS" in html
    assert 'value="viewer" selected' in html


def test_membership_list_renders(
    staff: Client,
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    add_member(make_terminal(slug="lobby", images=0), make_user("guest"))

    response = staff.get(reverse("admin:gallery_terminalmembership_changelist"))

    assert response.status_code == 200
    assert "guest" in response.content.decode()


def test_admin_is_closed_to_people_who_are_not_staff(
    make_user: Callable[..., Any],
) -> None:
    client = Client()
    client.force_login(make_user())

    response = client.get(reverse("admin:gallery_image_changelist"))

    assert response.status_code == 302


def test_terminal_admin_does_not_move_the_picture_behind_the_viewers_backs(
    staff: Client, make_terminal: Callable[..., Terminal]
) -> None:
    terminal = make_terminal(slug="lobby", images=2)
    first, second = terminal.images.order_by("id")

    response = staff.post(
        reverse("admin:gallery_terminal_change", args=[terminal.pk]),
        {
            "name": "Lobby",
            "slug": "lobby",
            "owner": terminal.owner_id,
            "is_public": "on",
            "current_image": second.pk,
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )

    assert response.status_code == 302  # saved
    terminal.refresh_from_db()
    assert terminal.current_image_id == first.pk
    assert terminal.version == 0


@pytest.fixture
def viewing_staff(make_user: Callable[..., Any]) -> Client:
    """Staff who may look at images but not change them."""
    from django.contrib.auth.models import Permission

    user = make_user("onlooker", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_image"))
    client = Client()
    client.force_login(user)
    return client


def test_staff_who_may_only_view_cannot_regenerate(
    viewing_staff: Client, make_image: Callable[..., Image], django_capture_on_commit_callbacks: Any
) -> None:
    failed = make_image(prompt="a storm", status=Image.Status.FAILED, error="Busy.")
    listing = viewing_staff.get(reverse("admin:gallery_image_changelist"))
    assert listing.status_code == 200
    assert "regenerate" not in listing.content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        viewing_staff.post(
            reverse("admin:gallery_image_changelist"),
            {"action": "regenerate", "_selected_action": [failed.pk]},
        )

    failed.refresh_from_db()
    assert failed.status == Image.Status.FAILED  # each regenerated picture may be paid for
    assert not DBTaskResult.objects.exists()


def test_the_owner_filter_lists_owners_of_images_only(
    viewing_staff: Client, make_image: Callable[..., Image], make_user: Callable[..., Any]
) -> None:
    make_image(prompt="a fox")
    make_image(prompt="an owl", owner=make_user("birder"))
    make_user("bystander")  # an account with no images

    html = viewing_staff.get(reverse("admin:gallery_image_changelist")).content.decode()

    assert "By owner" in html and "birder" in html
    assert "bystander" not in html


def test_deleting_an_image_takes_its_files_down(
    staff: Client, make_image: Callable[..., Image], django_capture_on_commit_callbacks: Any
) -> None:
    image = make_image(prompt="something that must come down")
    files = [Path(image.file.path), Path(image.thumbnail.path)]
    assert all(path.is_file() for path in files)

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            reverse("admin:gallery_image_delete", args=[image.pk]), {"post": "yes"}
        )

    assert response.status_code == 302
    # The proxy serves whatever is in MEDIA_ROOT: a picture taken down must leave it.
    assert [path for path in files if path.exists()] == []


def test_deleting_the_picture_a_terminal_shows_moves_it_on_and_tells_its_viewers(
    staff: Client, make_terminal: Callable[..., Terminal], django_capture_on_commit_callbacks: Any
) -> None:
    terminal = make_terminal(slug="lobby", images=3)
    first, second, third = Image.objects.filter(terminal=terminal).order_by("id")
    Terminal.objects.filter(pk=terminal.pk).update(current_image=second, version=4)
    heard = _listening(terminal)

    with django_capture_on_commit_callbacks(execute=True):
        staff.post(reverse("admin:gallery_image_delete", args=[second.pk]), {"post": "yes"})
    terminal.refresh_from_db()
    assert (terminal.current_image_id, terminal.version) == (third.pk, 5)
    [state] = heard()
    assert (state["version"], json.loads(state["state"])["image"]["id"]) == (5, third.pk)

    # The last one steps back; with none left, the terminal shows nothing.
    for image, shown in ((third, first.pk), (first, None)):
        with django_capture_on_commit_callbacks(execute=True):
            staff.post(reverse("admin:gallery_image_delete", args=[image.pk]), {"post": "yes"})
        terminal.refresh_from_db()
        assert terminal.current_image_id == shown
    assert terminal.version == 7
    assert [state["version"] for state in heard()] == [6, 7]


def _listening(terminal: Terminal) -> Callable[[], list[dict[str, Any]]]:
    """Joins the terminal's group on the in-memory layer; returns a drain of its states."""
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(terminal_group_name(terminal.pk), channel)

    async def drain() -> list[dict[str, Any]]:
        heard = []
        while True:
            try:
                heard.append(await asyncio.wait_for(layer.receive(channel), 0.05))
            except TimeoutError:
                return [message for message in heard if message["type"] == "terminal.state"]

    return async_to_sync(drain)


def test_a_terminals_page_reads_its_members_without_a_query_each(
    staff: Client,
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    terminal = make_terminal(slug="lobby", images=1)
    url = reverse("admin:gallery_terminal_change", args=[terminal.pk])

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff.get(url).status_code == 200
        return len(captured)

    add_member(terminal, make_user("m0"))
    one = queries()
    for number in range(1, 30):
        add_member(terminal, make_user(f"m{number}"))
    # Each row's user, its terminal and its user's label come with the one query.
    assert queries() == one
    # Each row still names its member, linked, as Django's raw-id widget does.
    html = staff.get(url).content.decode()
    for number in range(30):
        member = get_user_model().objects.get(username=f"m{number}")
        assert f'<a href="/admin/auth/user/{member.pk}/change/">m{number}</a>' in html
