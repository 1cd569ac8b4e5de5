"""Gallery reads: who may watch or drive a terminal, and what a terminal shows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from gallery import selectors
from gallery.models import Image, Terminal, TerminalMembership

pytestmark = pytest.mark.django_db

# (who, public terminal rights, private terminal rights) as (can_watch, can_control)
RIGHTS = [
    ("anonymous", (True, False), (False, False)),
    ("stranger", (True, False), (False, False)),
    ("viewer", (True, False), (True, False)),
    ("controller", (True, True), (True, True)),
    ("inactive_controller", (True, False), (True, False)),
    ("owner", (True, True), (True, True)),
    ("staff", (True, True), (True, True)),
]


@pytest.fixture
def person(
    make_user: Callable[..., Any], add_member: Callable[..., TerminalMembership], owner: Any
) -> Callable[[str, Terminal], Any]:
    def make(who: str, terminal: Terminal) -> Any:
        if who == "anonymous":
            return AnonymousUser()
        if who == "owner":
            return owner
        if who == "staff":
            return make_user(is_staff=True)
        user = make_user(is_active=who != "inactive_controller")
        if who == "viewer":
            add_member(terminal, user, TerminalMembership.Role.VIEWER)
        elif who in ("controller", "inactive_controller"):
            add_member(terminal, user, TerminalMembership.Role.CONTROLLER)
        return user

    return make


@pytest.mark.parametrize(("who", "public", "private"), RIGHTS)
def test_rights_on_public_and_private_terminals(
    who: str,
    public: tuple[bool, bool],
    private: tuple[bool, bool],
    make_terminal: Callable[..., Terminal],
    person: Callable[[str, Terminal], Any],
) -> None:
    for terminal, expected in (
        (make_terminal(slug="open", is_public=True), public),
        (make_terminal(slug="closed", is_public=False), private),
    ):
        user = person(who, terminal)
        assert selectors.terminal_rights(user=user, terminal=terminal) == expected
        # The one-query form agrees with the separate checks.
        assert (
            selectors.terminal_can_watch(user=user, terminal=terminal),
            selectors.terminal_can_control(user=user, terminal=terminal),
        ) == expected


def test_terminal_rights_costs_at_most_one_query(
    make_terminal: Callable[..., Terminal],
    person: Callable[[str, Terminal], Any],
    django_assert_max_num_queries: Any,
) -> None:
    terminal = make_terminal(is_public=False)
    for who in ("anonymous", "viewer", "owner", "staff"):
        user = person(who, terminal)
        with django_assert_max_num_queries(1):
            selectors.terminal_rights(user=user, terminal=terminal)


def test_a_membership_elsewhere_grants_nothing_here(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
) -> None:
    here = make_terminal(slug="here", is_public=False)
    elsewhere = make_terminal(slug="elsewhere", is_public=False)
    user = make_user()
    add_member(elsewhere, user)
    assert selectors.terminal_rights(user=user, terminal=here) == (False, False)


def test_terminal_images_are_its_ready_images_oldest_first(
    make_terminal: Callable[..., Terminal], make_image: Callable[..., Image]
) -> None:
    terminal = make_terminal(slug="lobby", images=2)
    make_terminal(slug="annex", images=2)
    make_image(terminal=terminal, status=Image.Status.QUEUED)
    make_image(terminal=terminal, status=Image.Status.FAILED)
    newest = make_image(terminal=terminal)
    ids = list(selectors.terminal_images(terminal=terminal).values_list("id", flat=True))
    assert len(ids) == 3
    assert ids == sorted(ids)
    assert ids[-1] == newest.pk


def test_image_state_describes_the_image_and_its_place(
    make_terminal: Callable[..., Terminal], make_image: Callable[..., Image]
) -> None:
    terminal = make_terminal(images=2)
    untitled = make_image(terminal=terminal, prompt="p" * 100, title="")
    state = selectors.image_state(terminal=terminal, image=untitled)
    assert state is not None
    assert state["id"] == untitled.pk
    assert state["title"] == "p" * 80
    assert state["prompt"] == "p" * 100
    assert state["url"] == untitled.file.url
    assert state["thumbnail_url"] == untitled.thumbnail.url
    assert (state["position"], state["count"]) == (3, 3)
    assert selectors.image_state(terminal=terminal, image=None) is None


def test_terminal_state_carries_version_image_and_neighbours(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = make_terminal(images=2)
    terminal.version = 5
    state = selectors.terminal_state(terminal=terminal)
    assert state["type"] == "terminal.state"
    assert state["version"] == 5
    assert state["image"]["id"] == terminal.current_image_id
    assert [n["position"] for n in state["neighbours"]] == [1, 2]
    assert set(state["neighbours"][0]) == {"id", "title", "thumbnail_url", "position"}


@pytest.mark.parametrize(
    ("current_index", "expected_positions"),
    [
        (0, [1, 2, 3, 4]),
        (1, [1, 2, 3, 4, 5]),
        (4, [2, 3, 4, 5, 6, 7, 8]),
        (9, [7, 8, 9, 10]),
    ],
)
def test_neighbours_are_a_strip_of_three_each_side(
    current_index: int,
    expected_positions: list[int],
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = make_terminal(images=10)
    images = list(selectors.terminal_images(terminal=terminal))
    current = images[current_index]
    strip = selectors.neighbour_states(terminal=terminal, image=current)
    assert [n["position"] for n in strip] == expected_positions
    assert [n["id"] for n in strip] == [images[p - 1].pk for p in expected_positions]
    assert [n["title"] for n in strip] == [images[p - 1].title for p in expected_positions]
    assert all(n["thumbnail_url"].endswith(".png") for n in strip)


def test_neighbours_of_nothing_are_the_first_seven(
    make_terminal: Callable[..., Terminal],
) -> None:
    terminal = make_terminal(images=9)
    strip = selectors.neighbour_states(terminal=terminal, image=None)
    assert [n["position"] for n in strip] == [1, 2, 3, 4, 5, 6, 7]
    assert (
        selectors.neighbour_states(terminal=make_terminal(slug="bare", images=0), image=None) == []
    )


def test_neighbour_positions_skip_a_current_image_no_longer_shown(
    make_terminal: Callable[..., Terminal], make_image: Callable[..., Image]
) -> None:
    terminal = make_terminal(images=2)
    hidden = make_image(terminal=terminal, status=Image.Status.FAILED)
    make_image(terminal=terminal)
    strip = selectors.neighbour_states(terminal=terminal, image=hidden)
    assert [n["id"] for n in strip][2] == hidden.pk
    # The failed image holds the place of the one before it; the next is still third.
    assert [n["position"] for n in strip] == [1, 2, 2, 3]


def test_gallery_images_search_every_word_in_prompt_or_title(
    make_image: Callable[..., Image], make_user: Callable[..., Any]
) -> None:
    fox = make_image(prompt="a red fox", title="Evening")
    whale = make_image(prompt="a blue whale", title="Red tide")
    make_image(prompt="a red fox, unfinished", status=Image.Status.QUEUED)
    assert set(selectors.gallery_images(query="red")) == {fox, whale}
    assert list(selectors.gallery_images(query="red FOX")) == [fox]
    assert list(selectors.gallery_images(query="giraffe")) == []

    author = make_user()
    draft = make_image(prompt="a draft", owner=author, status=Image.Status.QUEUED)
    assert list(selectors.gallery_images(owner=author)) == [draft]


def test_terminals_visible_to_and_controlled_by(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
    owner: Any,
) -> None:
    public = make_terminal(slug="public")
    private = make_terminal(slug="private", is_public=False)
    shared = make_terminal(slug="shared", is_public=False)
    viewer = make_user()
    add_member(shared, viewer, TerminalMembership.Role.VIEWER)
    add_member(public, viewer, TerminalMembership.Role.CONTROLLER)
    staff = make_user(is_staff=True)

    def slugs(terminals: Any) -> set[str]:
        return {terminal.slug for terminal in terminals}

    assert slugs(selectors.terminals_visible_to(user=AnonymousUser())) == {"public"}
    assert slugs(selectors.terminals_visible_to(user=viewer)) == {"public", "shared"}
    assert slugs(selectors.terminals_visible_to(user=owner)) == {"public", "private", "shared"}
    assert slugs(selectors.terminals_visible_to(user=staff)) == {"public", "private", "shared"}
    assert slugs(selectors.terminals_controlled_by(user=AnonymousUser())) == set()
    assert slugs(selectors.terminals_controlled_by(user=viewer)) == {"public"}
    assert slugs(selectors.terminals_controlled_by(user=owner)) == {"public", "private", "shared"}
    assert slugs(selectors.terminals_controlled_by(user=staff)) == {"public", "private", "shared"}
    assert private.pk not in {t.pk for t in selectors.terminals_visible_to(user=viewer)}
