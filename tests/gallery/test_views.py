"""The gallery pages as a browser sees them: paging, search, rights, forms, live status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from gallery.models import Image, Terminal

pytestmark = pytest.mark.django_db


def _logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _ids(response: Any) -> list[int]:
    return [image.pk for image in response.context["page_obj"]]


# --- gallery ----------------------------------------------------------------------------


def test_gallery_pages_24_ready_images_newest_first(
    client: Client, make_image: Callable[..., Image]
) -> None:
    images = [make_image(prompt=f"study number {n}") for n in range(30)]
    make_image(prompt="still cooking", status=Image.Status.QUEUED)

    first = client.get(reverse("gallery:index"))
    second = client.get(reverse("gallery:index"), {"page": 2})
    beyond = client.get(reverse("gallery:index"), {"page": "999"})

    assert first.status_code == 200
    newest_first = [image.pk for image in reversed(images)]
    assert _ids(first) == newest_first[:24]
    assert _ids(second) == newest_first[24:]
    assert _ids(beyond) == _ids(second)  # out of range lands on the last page
    assert b"still cooking" not in first.content
    assert b'rel="next"' in first.content


def test_gallery_search_matches_every_word_of_the_prompt(
    client: Client, make_image: Callable[..., Image]
) -> None:
    fox = make_image(prompt="a red fox under a blue moon")
    make_image(prompt="a red barn at noon")
    make_image(prompt="a grey fox in the rain")

    response = client.get(reverse("gallery:index"), {"q": "  red   FOX "})

    assert _ids(response) == [fox.pk]
    assert response.context["query"] == "red FOX"
    assert b'value="red FOX"' in response.content


def test_gallery_hides_images_of_private_terminals_from_outsiders(
    client: Client, make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    private = make_terminal(slug="vault", images=2, is_public=False)

    outsider = _logged_in(make_user())
    owner = _logged_in(private.owner)

    assert _ids(client.get(reverse("gallery:index"))) == []
    assert _ids(outsider.get(reverse("gallery:index"))) == []
    assert len(_ids(owner.get(reverse("gallery:index")))) == 2


def test_my_images_include_queued_and_failed_but_not_other_peoples(
    make_image: Callable[..., Image], make_user: Callable[..., Any], owner: Any
) -> None:
    queued = make_image(prompt="waiting", status=Image.Status.QUEUED)
    failed = make_image(prompt="broken", status=Image.Status.FAILED, error="no colours left")
    make_image(prompt="someone else's", owner=make_user())

    response = _logged_in(owner).get(reverse("gallery:mine"))

    assert set(_ids(response)) == {queued.pk, failed.pk}
    assert b"Queued" in response.content and b"Failed" in response.content


def test_my_images_need_a_login(client: Client) -> None:
    response = client.get(reverse("gallery:mine"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- image page and status --------------------------------------------------------------


def test_image_page_shows_picture_prompt_owner_size_provider_and_source(
    client: Client, make_image: Callable[..., Image]
) -> None:
    source = make_image(prompt="a quiet harbour", title="Harbour")
    edit = make_image(
        prompt="a quiet harbour, snowy", title="Snowy harbour", source=source, description="Cold."
    )

    response = client.get(edit.get_absolute_url())
    html = response.content.decode()

    assert response.status_code == 200
    assert f'src="{edit.file.url}"' in html
    assert 'alt="Snowy harbour"' in html
    assert "a quiet harbour, snowy" in html
    assert "owner" in html
    assert "32 × 32 px" in html
    assert "local" in html
    assert "Cold." in html
    assert f'href="{source.get_absolute_url()}"' in html
    assert "image-status.js" not in html  # nothing to poll for a finished picture


def test_queued_image_page_polls_its_status(make_image: Callable[..., Image], owner: Any) -> None:
    image = make_image(prompt="a slow sunrise", status=Image.Status.QUEUED)

    html = _logged_in(owner).get(image.get_absolute_url()).content.decode()

    assert 'role="status"' in html and "Queued" in html
    assert reverse("gallery:image-status", args=[image.pk]) in html
    assert "js/image-status.js" in html


def test_unfinished_image_is_private_to_its_owner(
    client: Client, make_image: Callable[..., Image], make_user: Callable[..., Any]
) -> None:
    image = make_image(status=Image.Status.GENERATING)

    assert client.get(image.get_absolute_url()).status_code == 404
    assert _logged_in(make_user()).get(image.get_absolute_url()).status_code == 404
    assert client.get(reverse("gallery:image-status", args=[image.pk])).status_code == 404


def test_image_of_private_terminal_is_not_found_for_outsiders(
    client: Client, make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    terminal = make_terminal(slug="vault", images=1, is_public=False)
    image = terminal.current_image
    assert image is not None

    assert client.get(image.get_absolute_url()).status_code == 404
    assert _logged_in(make_user()).get(image.get_absolute_url()).status_code == 404
    assert _logged_in(terminal.owner).get(image.get_absolute_url()).status_code == 200


def test_status_endpoint_reports_progress_then_the_finished_picture(
    make_image: Callable[..., Image], owner: Any
) -> None:
    image = make_image(prompt="a lighthouse", status=Image.Status.GENERATING)
    Image.objects.filter(pk=image.pk).update(progress=40)
    client = _logged_in(owner)
    url = reverse("gallery:image-status", args=[image.pk])

    generating = client.get(url)
    assert generating.status_code == 200
    assert "no-cache" in generating["Cache-Control"]
    assert generating.json() == {
        "id": image.pk,
        "status": "generating",
        "progress": 40,
        "error": "",
        "title": image.title,
        "image_url": "",
        "thumbnail_url": "",
        "width": 32,
        "height": 32,
    }

    Image.objects.filter(pk=image.pk).update(status=Image.Status.FAILED, error="The sea ran dry.")
    failed = client.get(url).json()
    assert failed["status"] == "failed"
    assert failed["error"] == "The sea ran dry."


def test_status_endpoint_of_ready_image_links_the_files(
    client: Client, make_image: Callable[..., Image]
) -> None:
    image = make_image()

    data = client.get(reverse("gallery:image-status", args=[image.pk])).json()

    assert data["status"] == "ready"
    assert data["image_url"] == image.file.url
    assert data["thumbnail_url"] == image.thumbnail.url


# --- create -----------------------------------------------------------------------------


def test_create_needs_a_login(client: Client) -> None:
    response = client.get(reverse("gallery:create"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_create_form_offers_only_terminals_the_user_controls(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    user = make_user()
    mine = make_terminal(slug="mine", images=0, owner=user)
    driven = make_terminal(slug="driven", images=0)
    add_member(driven, user, role="controller")
    watched = make_terminal(slug="watched", images=0)
    add_member(watched, user, role="viewer")
    make_terminal(slug="elsewhere", images=0)

    form = _logged_in(user).get(reverse("gallery:create")).context["form"]

    assert set(form.fields["terminal"].queryset) == {mine, driven}


def test_create_form_is_prefilled_from_the_link_that_led_to_it(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(slug="lobby", images=0)

    form = (
        _logged_in(owner)
        .get(
            reverse("gallery:create"),
            {"prompt": "  a red  fox ", "style": "watercolour", "terminal": "lobby"},
        )
        .context["form"]
    )

    assert form.initial == {
        "prompt": "a red fox",
        "style": "watercolour",
        "terminal": terminal.pk,
    }


def test_create_form_prefill_leaves_out_foreign_terminals_and_unknown_styles(
    make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    make_terminal(slug="not-yours", images=0)

    response = _logged_in(make_user()).get(
        reverse("gallery:create"),
        {"prompt": "x" * 5000, "style": "<script>", "terminal": "not-yours"},
    )

    assert response.status_code == 200
    assert response.context["form"].initial == {"prompt": "x" * 1000}
    assert "not-yours" not in response.content.decode()


def test_failed_image_page_offers_its_owner_to_try_again(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
    make_user: Callable[..., Any],
    owner: Any,
) -> None:
    terminal = make_terminal(slug="lobby", images=1)
    failed = make_image(
        terminal=terminal,
        prompt="a fox & a moon",
        style="neon",
        status=Image.Status.FAILED,
        error="The generator ran out of time.",
    )
    url = failed.get_absolute_url()

    owners = _logged_in(owner).get(url).content.decode()
    others = _logged_in(make_user()).get(url).content.decode()

    assert "Try again" in owners
    assert (
        "/images/new/?prompt=a%20fox%20%26%20a%20moon&amp;style=neon&amp;terminal=lobby" in owners
    )
    assert "Try again" not in others
    assert "The generator ran out of time." in others


def test_create_rejects_a_blank_prompt_and_enqueues_nothing(owner: Any) -> None:
    response = _logged_in(owner).post(reverse("gallery:create"), {"prompt": "   \n  "})

    assert response.status_code == 400
    assert "Describe the picture you want." in response.content.decode()
    assert not Image.objects.exists()
    assert not DBTaskResult.objects.exists()


def test_create_past_the_hourly_allowance_says_when_to_come_back(owner: Any, settings: Any) -> None:
    settings.IMAGES_PER_HOUR = 1
    client = _logged_in(owner)
    assert client.post(reverse("gallery:create"), {"prompt": "a boat"}).status_code == 302

    response = client.post(reverse("gallery:create"), {"prompt": "another boat"})

    assert response.status_code == 400
    assert "You have asked for 1 picture this hour, the most allowed." in response.content.decode()
    assert Image.objects.count() == 1


def test_create_rejects_a_terminal_the_user_cannot_control(
    make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    terminal = make_terminal(slug="not-yours", images=0)

    response = _logged_in(make_user()).post(
        reverse("gallery:create"), {"prompt": "a red fox", "terminal": terminal.pk}
    )

    assert response.status_code == 400
    assert "terminal" in response.context["form"].errors
    assert not Image.objects.exists()


def test_create_rejects_an_unknown_style(owner: Any) -> None:
    response = _logged_in(owner).post(
        reverse("gallery:create"), {"prompt": "a red fox", "style": "<script>"}
    )

    assert response.status_code == 400
    assert "style" in response.context["form"].errors


def test_create_queues_the_image_enqueues_its_job_and_shows_its_page(
    make_terminal: Callable[..., Terminal],
    owner: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    terminal = make_terminal(slug="lobby", images=0)
    client = _logged_in(owner)

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("gallery:create"),
            {
                "prompt": "  a red   fox under a blue moon ",
                "style": "watercolour",
                "terminal": terminal.pk,
            },
        )

    image = Image.objects.get()
    assert response.status_code == 302
    assert response["Location"] == image.get_absolute_url()
    assert image.prompt == "a red fox under a blue moon"
    assert image.style == "watercolour"
    assert image.terminal == terminal
    assert image.owner == owner
    assert image.status == Image.Status.QUEUED
    job = DBTaskResult.objects.get()
    assert job.task_path == "gallery.tasks.generate_image"
    assert job.args_kwargs["kwargs"] == {"image_id": image.pk}
    assert image.task_id == str(job.id)

    page = client.get(response["Location"])
    assert "Your picture is on its way." in page.content.decode()


# --- terminals --------------------------------------------------------------------------


def test_terminal_list_shows_anonymous_visitors_public_terminals_only(
    client: Client, make_terminal: Callable[..., Terminal]
) -> None:
    make_terminal(slug="lobby", name="Lobby", images=1)
    make_terminal(slug="vault", name="Vault", images=1, is_public=False)

    html = client.get(reverse("gallery:terminal-list")).content.decode()

    assert "Lobby" in html
    assert "Vault" not in html


def test_public_terminal_renders_its_state_for_an_anonymous_viewer(
    client: Client, make_terminal: Callable[..., Terminal]
) -> None:
    terminal = make_terminal(slug="lobby", images=3)
    current = terminal.current_image
    assert current is not None

    response = client.get(terminal.get_absolute_url())
    html = response.content.decode()

    assert response.status_code == 200
    assert f'data-image-id="{current.pk}"' in html
    assert f'data-version="{terminal.version}"' in html
    assert f'src="{current.file.url}"' in html
    assert "1 of 3" in html
    state = response.context["state"]
    assert state["can_control"] is False
    assert state["image"]["id"] == current.pk
    assert len(state["neighbours"]) == 3
    assert '<script id="terminal-state" type="application/json">' in html
    assert (
        'id="terminal-controls"' in html
        and "hidden>" in html.split('id="terminal-controls"')[1][:200]
    )
    assert "voice-slot" not in html
    assert "js/terminal.js" in html


def test_private_terminal_is_not_found_for_anonymous_and_outsiders(
    client: Client, make_terminal: Callable[..., Terminal], make_user: Callable[..., Any]
) -> None:
    terminal = make_terminal(slug="vault", is_public=False)

    assert client.get(terminal.get_absolute_url()).status_code == 404
    assert _logged_in(make_user()).get(terminal.get_absolute_url()).status_code == 404


def test_private_terminal_opens_for_a_viewer_member_without_controls(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    terminal = make_terminal(slug="vault", is_public=False)
    member = make_user()
    add_member(terminal, member, role="viewer")

    response = _logged_in(member).get(terminal.get_absolute_url())

    assert response.status_code == 200
    assert response.context["can_control"] is False


def test_controller_gets_controls_goto_thumbnails_and_the_voice_slot(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
) -> None:
    terminal = make_terminal(slug="lobby", images=3)
    controller = make_user()
    add_member(terminal, controller, role="controller")

    response = _logged_in(controller).get(terminal.get_absolute_url())
    html = response.content.decode()

    assert response.context["can_control"] is True
    state = json.loads(html.split('type="application/json">')[1].split("</script>")[0])
    assert state["can_control"] is True
    assert 'data-action="next"' in html
    assert html.count('<button type="button" class="strip__thumb"') == 3
    assert "voice-slot" in html


def test_empty_terminal_offers_its_controller_to_create_the_first_picture(
    client: Client,
    make_terminal: Callable[..., Terminal],
    owner: Any,
) -> None:
    terminal = make_terminal(slug="atelier", images=0)

    controller = _logged_in(owner).get(terminal.get_absolute_url()).content.decode()
    anonymous = client.get(terminal.get_absolute_url()).content.decode()

    for html in (controller, anonymous):
        assert "No pictures yet" in html
        # Nothing to navigate yet: the buttons wait for the first picture.
        assert "hidden>" in html.split('id="terminal-controls"')[1][:200]
    create_link = reverse("gallery:create") + "?terminal=atelier"
    assert create_link in controller
    assert 'id="terminal-empty-create">' in controller
    assert 'id="terminal-empty-create" hidden>' in anonymous


def test_terminal_page_lists_the_pictures_already_in_the_works(
    client: Client, make_terminal: Callable[..., Terminal], make_image: Callable[..., Image]
) -> None:
    terminal = make_terminal(slug="lobby", images=1)
    queued = make_image(terminal=terminal, prompt="a lighthouse", status=Image.Status.QUEUED)
    generating = make_image(terminal=terminal, prompt="an orchard", status=Image.Status.GENERATING)
    make_image(terminal=terminal, prompt="a forest", status=Image.Status.FAILED)
    make_image(prompt="for no terminal", status=Image.Status.QUEUED)

    html = client.get(terminal.get_absolute_url()).content.decode()

    jobs = json.loads(
        html.split('id="terminal-jobs-now" type="application/json">')[1].split("<")[0]
    )
    assert [(job["id"], job["status"], job["prompt"]) for job in jobs] == [
        (queued.pk, "queued", "a lighthouse"),
        (generating.pk, "generating", "an orchard"),
    ]


def test_unknown_terminal_is_not_found(client: Client) -> None:
    assert client.get(reverse("gallery:terminal-detail", args=["nowhere"])).status_code == 404


# --- accounts and layout ----------------------------------------------------------------


def test_signup_logs_the_new_user_in(client: Client) -> None:
    response = client.post(
        reverse("signup"),
        {
            "username": "painter",
            "password1": "a-long-test-password-42",
            "password2": "a-long-test-password-42",
        },
    )

    assert response.status_code == 302
    page = client.get(reverse("gallery:index")).content.decode()
    assert "painter" in page
    assert "Log out" in page


def test_signup_form_shows_its_errors(client: Client) -> None:
    response = client.post(
        reverse("signup"), {"username": "painter", "password1": "x", "password2": "y"}
    )

    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode()


def test_login_page_and_logout_by_post(client: Client, owner: Any) -> None:
    login_page = client.get(reverse("login"))
    assert login_page.status_code == 200
    assert 'name="username"' in login_page.content.decode()

    client.post(reverse("login"), {"username": "owner", "password": "a-long-test-password"})
    assert "Log out" in client.get(reverse("gallery:index")).content.decode()

    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert "Log in" in client.get(reverse("gallery:index")).content.decode()


def test_header_has_navigation_landmarks_and_a_skip_link(client: Client) -> None:
    html = client.get(reverse("gallery:index")).content.decode()

    assert '<nav class="site-nav" aria-label="Main">' in html
    assert '<main id="main"' in html
    assert 'href="#main"' in html
    for name in ("gallery:index", "gallery:terminal-list", "gallery:create"):
        assert f'href="{reverse(name)}"' in html
    assert reverse("gallery:mine") not in html  # only for people with images of their own


def test_a_controllers_terminal_page_shows_no_template_comment(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    """Django's {# #} comments end at the line: one over two lines is printed as text."""
    terminal = make_terminal(slug="lobby", images=2)
    page = _logged_in(owner).get(reverse("gallery:terminal-detail", args=[terminal.slug]))
    html = page.content.decode()
    assert "data-voice-panel" in html  # the controller's voice panel is on it
    assert "{#" not in html and "#}" not in html and "{%" not in html
