"""Gallery services against the database: navigation, its rights and its broadcast."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from artterminal.groups import terminal_group_name
from gallery import selectors, services
from gallery.models import Image, Terminal, TerminalMembership

pytestmark = pytest.mark.django_db


def navigate(terminal: Terminal, user: Any, action: str, **arguments: Any) -> Terminal:
    return services.terminal_navigate(
        terminal_id=terminal.pk, user=user, action=action, **arguments
    )


def image_ids(terminal: Terminal) -> list[int]:
    return list(selectors.terminal_images(terminal=terminal).values_list("id", flat=True))


def current(terminal: Terminal) -> tuple[int | None, int]:
    terminal.refresh_from_db()
    return terminal.current_image_id, terminal.version


def test_next_and_previous_walk_the_images_and_wrap_around(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=3)
    ids = image_ids(terminal)

    walked = [navigate(terminal, owner, "next").current_image_id for _ in range(4)]
    assert walked == [ids[1], ids[2], ids[0], ids[1]]
    assert current(terminal) == (ids[1], 4)

    walked = [navigate(terminal, owner, "previous").current_image_id for _ in range(3)]
    assert walked == [ids[0], ids[2], ids[1]]
    assert current(terminal) == (ids[1], 7)


def test_first_and_last(make_terminal: Callable[..., Terminal], owner: Any) -> None:
    terminal = make_terminal(images=4)
    ids = image_ids(terminal)
    assert navigate(terminal, owner, "last").current_image_id == ids[-1]
    assert navigate(terminal, owner, "first").current_image_id == ids[0]
    # Staying put is still a change of what was asked: one version each.
    assert navigate(terminal, owner, "first").version == 3


def test_a_terminal_showing_nothing_starts_from_either_end(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=3)
    ids = image_ids(terminal)
    Terminal.objects.filter(pk=terminal.pk).update(current_image=None)
    terminal.refresh_from_db()
    assert navigate(terminal, owner, "next").current_image_id == ids[0]
    Terminal.objects.filter(pk=terminal.pk).update(current_image=None)
    terminal.refresh_from_db()
    assert navigate(terminal, owner, "previous").current_image_id == ids[-1]


def test_images_not_ready_or_of_other_terminals_are_skipped(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
    owner: Any,
) -> None:
    terminal = make_terminal(images=1)
    make_image(terminal=terminal, prompt="still drawing", status=Image.Status.GENERATING)
    make_image(terminal=terminal, prompt="broken", status=Image.Status.FAILED)
    make_image(terminal=None, prompt="loose image")
    shown = make_image(terminal=terminal, prompt="finished")
    first = terminal.current_image_id
    assert navigate(terminal, owner, "next").current_image_id == shown.pk
    assert navigate(terminal, owner, "next").current_image_id == first


def test_goto_moves_to_an_image_of_this_terminal_only(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
    owner: Any,
) -> None:
    terminal = make_terminal(slug="lobby", images=3)
    other = make_terminal(slug="annex", images=2)
    ids = image_ids(terminal)
    assert navigate(terminal, owner, "goto", image_id=ids[2]).current_image_id == ids[2]

    failed = make_image(terminal=terminal, status=Image.Status.FAILED)
    for foreign in (image_ids(other)[0], failed.pk, 10**9):
        with pytest.raises(services.NotFound) as error:
            navigate(terminal, owner, "goto", image_id=foreign)
        assert error.value.code == "image_not_found"
    assert current(terminal) == (ids[2], 1)


@pytest.mark.parametrize("image_id", [None, "1", True, 1.0])
def test_goto_needs_a_numeric_image_id(
    image_id: Any, make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal()
    with pytest.raises(services.InvalidRequest) as error:
        navigate(terminal, owner, "goto", image_id=image_id)
    assert error.value.code == "invalid_image_id"
    assert current(terminal)[1] == 0


def test_position_counts_from_one(make_terminal: Callable[..., Terminal], owner: Any) -> None:
    terminal = make_terminal(images=3)
    ids = image_ids(terminal)
    assert navigate(terminal, owner, "position", position=3).current_image_id == ids[2]
    assert navigate(terminal, owner, "position", position=1).current_image_id == ids[0]


@pytest.mark.parametrize("position", [0, 4, -1, None, True, "2"])
def test_position_out_of_range_is_refused(
    position: Any, make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=3)
    with pytest.raises(services.InvalidRequest) as error:
        navigate(terminal, owner, "position", position=position)
    assert error.value.code == "invalid_position"
    assert "1 to 3" in error.value.message
    assert current(terminal)[1] == 0


def test_search_finds_the_newest_image_matching_every_word(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
    owner: Any,
) -> None:
    terminal = make_terminal(images=1)
    older = make_image(terminal=terminal, prompt="a red fox in the snow")
    newer = make_image(terminal=terminal, prompt="a red fox by the sea")
    make_image(terminal=terminal, prompt="a blue whale by the sea")
    assert navigate(terminal, owner, "search", query="RED fox").current_image_id == newer.pk
    assert navigate(terminal, owner, "search", query="fox snow").current_image_id == older.pk


@pytest.mark.parametrize(
    ("query", "code"), [("", "invalid_query"), ("   ", "invalid_query"), ("zebra", "no_match")]
)
def test_search_errors(
    query: str, code: str, make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=2)
    with pytest.raises(services.GalleryError) as error:
        navigate(terminal, owner, "search", query=query)
    assert error.value.code == code
    assert current(terminal)[1] == 0


def test_unknown_action_is_refused_before_anything_runs(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal()
    with pytest.raises(services.InvalidRequest) as error:
        navigate(terminal, owner, "jump")
    assert error.value.code == "invalid_action"
    assert current(terminal)[1] == 0


def test_an_empty_terminal_cannot_be_navigated(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=0)
    with pytest.raises(services.NotFound) as error:
        navigate(terminal, owner, "next")
    assert error.value.code == "empty_terminal"
    assert current(terminal) == (None, 0)


@pytest.mark.parametrize(
    ("who", "allowed"),
    [
        ("anonymous", False),
        ("stranger", False),
        ("viewer", False),
        ("inactive_staff", False),
        ("controller", True),
        ("owner", True),
        ("staff", True),
    ],
)
def test_only_controllers_owner_and_staff_navigate(
    who: str,
    allowed: bool,
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
    owner: Any,
) -> None:
    terminal = make_terminal(is_public=True)
    users: dict[str, Callable[[], Any]] = {
        "anonymous": AnonymousUser,
        "stranger": make_user,
        "viewer": lambda: add_member(terminal, make_user(), TerminalMembership.Role.VIEWER).user,
        "controller": lambda: add_member(terminal, make_user()).user,
        "owner": lambda: owner,
        "staff": lambda: make_user(is_staff=True),
        "inactive_staff": lambda: make_user(is_staff=True, is_active=False),
    }
    user = users[who]()
    if allowed:
        assert navigate(terminal, user, "next").version == 1
    else:
        with pytest.raises(services.NotAllowed) as error:
            navigate(terminal, user, "next")
        assert error.value.code == "forbidden"
        assert current(terminal)[1] == 0


@pytest.mark.django_db(transaction=True)
def test_the_state_is_broadcast_after_commit_only(
    make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    terminal = make_terminal(images=3)
    ids = image_ids(terminal)
    layer = get_channel_layer()
    assert layer is not None
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(terminal_group_name(terminal.pk), channel)

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon), transaction.atomic():
        navigate(terminal, owner, "next")
        raise Abandon
    assert current(terminal) == (ids[0], 0)

    navigate(terminal, owner, "next")
    message = async_to_sync(layer.receive)(channel)
    assert message["type"] == "terminal.state"
    assert message["version"] == 1  # not 2: the rolled-back move was never sent
    # The state goes out encoded once, without what each socket adds to it.
    state = json.loads(message["state"])
    assert state["image"]["id"] == ids[1]
    assert [n["id"] for n in state["neighbours"]] == ids
    assert set(state) == {"image", "neighbours"}


def test_image_generate_validates_its_input(
    make_terminal: Callable[..., Terminal],
    make_user: Callable[..., Any],
    owner: Any,
) -> None:
    terminal = make_terminal()
    image = services.image_generate(
        owner=owner, prompt="  a   quiet\n harbour  ", terminal=terminal
    )
    assert (image.prompt, image.status, image.terminal_id) == (
        "a quiet harbour",
        Image.Status.QUEUED,
        terminal.pk,
    )

    for prompt, code in (("   ", "empty_prompt"), ("x" * 1001, "prompt_too_long")):
        with pytest.raises(services.InvalidRequest) as error:
            services.image_generate(owner=owner, prompt=prompt)
        assert error.value.code == code
    with pytest.raises(services.NotAllowed):
        services.image_generate(owner=make_user(), prompt="a boat", terminal=terminal)


def test_image_edit_builds_on_a_finished_image(
    make_terminal: Callable[..., Terminal],
    make_image: Callable[..., Image],
    owner: Any,
) -> None:
    terminal = make_terminal()
    source = make_image(terminal=terminal, prompt="a lighthouse", seed=42)
    edit = services.image_edit(user=owner, image=source, instruction="make it snowy")
    assert (edit.prompt, edit.source_id, edit.seed, edit.terminal_id) == (
        "a lighthouse, make it snowy",
        source.pk,
        42,
        terminal.pk,
    )
    with pytest.raises(services.InvalidRequest) as error:
        services.image_edit(user=owner, image=source, instruction="  ")
    assert error.value.code == "empty_instruction"
    pending = make_image(terminal=terminal, status=Image.Status.QUEUED)
    with pytest.raises(services.InvalidRequest) as error:
        services.image_edit(user=owner, image=pending, instruction="brighter")
    assert error.value.code == "image_not_ready"
    with pytest.raises(services.InvalidRequest) as error:
        services.image_edit(user=owner, image=source, instruction="x " * 251)
    assert error.value.code == "instruction_too_long"


@pytest.mark.parametrize(
    "prompt",
    [
        ("a quiet harbour at dawn with fishing boats " * 30)[: services.MAX_PROMPT_LENGTH],
        "x" * services.MAX_PROMPT_LENGTH,  # no word to cut at
    ],
    ids=["words", "one-word"],
)
def test_an_edit_of_a_long_description_keeps_the_whole_instruction(
    make_image: Callable[..., Image], owner: Any, prompt: str
) -> None:
    source = make_image(prompt=prompt)
    instruction = "make it snowy " + "and bright " * 44  # at the longest allowed
    instruction = " ".join(instruction.split())[: services.MAX_INSTRUCTION_LENGTH]
    edit = services.image_edit(user=owner, image=source, instruction=instruction)
    assert edit.prompt.endswith(f", {instruction}")
    assert len(edit.prompt) <= services.MAX_PROMPT_LENGTH
    base = edit.prompt.removesuffix(f", {instruction}")
    assert prompt.startswith(base) and len(base) > 400
    assert base == base.rstrip(" ,;.")  # cut at a word: no dangling separator


def test_pictures_past_the_hourly_allowance_are_refused(
    make_image: Callable[..., Image], make_user: Callable[..., Any], owner: Any, settings: Any
) -> None:
    settings.IMAGES_PER_HOUR = 3
    source = make_image(prompt="a lighthouse")
    # Refused requests cost nothing of the allowance.
    with pytest.raises(services.InvalidRequest):
        services.image_generate(owner=owner, prompt="   ")
    services.image_generate(owner=owner, prompt="one")
    services.image_generate(owner=owner, prompt="two")
    services.image_edit(user=owner, image=source, instruction="three")
    with pytest.raises(services.RateLimited) as refused:
        services.image_generate(owner=owner, prompt="four")
    assert refused.value.code == "rate_limited"
    assert 0 < refused.value.retry_after <= 3600
    assert refused.value.message.startswith("You have asked for 3 pictures this hour")
    assert "Try again in" in refused.value.message
    assert not Image.objects.filter(prompt="four").exists()
    # Each user has their own; none at all when the setting is 0.
    services.image_generate(owner=make_user(), prompt="someone else's")
    settings.IMAGES_PER_HOUR = 0
    services.image_generate(owner=owner, prompt="unlimited")
