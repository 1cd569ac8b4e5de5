"""voice.tools: strict argument checks, dispatch through the real gallery services, rights,
and at-most-once execution per call_id."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gallery.models import Image, Terminal, TerminalMembership
from voice import tools
from voice.models import ToolCall, VoiceSession


@pytest.fixture
def terminal(make_terminal: Callable[..., Terminal]) -> Terminal:
    return make_terminal(slug="lobby", images=3)


@pytest.fixture
def session(owner: Any, terminal: Terminal) -> VoiceSession:
    return VoiceSession.objects.create(
        user=owner, terminal=terminal, upstream="engine", model="gpt-realtime", voice="verse"
    )


def run(session: VoiceSession, name: str, arguments: Any, call_id: str = "call_1") -> Any:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return tools.tool_call_execute(session=session, call_id=call_id, name=name, arguments=text)


def test_definitions_are_ga_function_tools() -> None:
    definitions = tools.tool_definitions()
    assert [d["name"] for d in definitions] == [
        "navigate_gallery",
        "generate_image",
        "describe_image",
        "edit_image",
    ]
    for definition in definitions:
        assert set(definition) == {"type", "name", "description", "parameters"}
        assert definition["type"] == "function"
        assert definition["parameters"]["type"] == "object"
        assert definition["parameters"]["additionalProperties"] is False
    json.dumps(definitions)  # sent as JSON in the session config


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("navigate_gallery", "{}"),
        ("navigate_gallery", '{"action": "sideways"}'),
        ("navigate_gallery", '{"action": 1}'),
        ("navigate_gallery", '{"action": "next", "speed": "fast"}'),
        ("navigate_gallery", '{"action": "goto", "position": 0}'),
        ("navigate_gallery", '{"action": "goto", "position": "2"}'),
        ("navigate_gallery", '{"action": "goto", "position": 2.5}'),
        ("navigate_gallery", '{"action": "goto", "position": true}'),
        ("navigate_gallery", '{"action": "goto", "position": NaN}'),
        ("navigate_gallery", '{"action": "next", "action": "last"}'),
        ("navigate_gallery", '["next"]'),
        ("navigate_gallery", "next"),
        ("generate_image", "{}"),
        ("generate_image", '{"prompt": "   "}'),
        ("generate_image", json.dumps({"prompt": "x" * 1001})),
        ("generate_image", json.dumps({"prompt": "a cat", "style": "s" * 41})),
        ("generate_image", '{"prompt": ["a cat"]}'),
        ("describe_image", '{"image_id": -3}'),
        ("describe_image", '{"image_id": null}'),
        ("edit_image", "{}"),
        ("edit_image", json.dumps({"instruction": "y" * 501})),
        ("teleport", "{}"),
    ],
)
def test_invalid_arguments_are_refused(name: str, arguments: str) -> None:
    with pytest.raises(tools.ToolArgumentsInvalid) as refused:
        tools.tool_arguments_validate(name=name, arguments=arguments)
    assert refused.value.message.endswith(".")


def test_arguments_must_be_a_string_of_bounded_length() -> None:
    with pytest.raises(tools.ToolArgumentsInvalid):
        tools.tool_arguments_validate(name="navigate_gallery", arguments={"action": "next"})
    with pytest.raises(tools.ToolArgumentsInvalid):
        tools.tool_arguments_validate(name="generate_image", arguments=" " * 9000)


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("navigate_gallery", {"action": "next"}),
        ("navigate_gallery", {"action": "goto", "position": 2}),
        ("navigate_gallery", {"action": "search", "query": "fox"}),
        ("generate_image", {"prompt": "a fox", "style": "watercolour"}),
        ("generate_image", {"prompt": "a fox", "style": ""}),
        ("describe_image", {}),
        ("describe_image", {"image_id": 4}),
        ("edit_image", {"instruction": "make it snowy"}),
    ],
)
def test_valid_arguments_pass(name: str, arguments: dict[str, Any]) -> None:
    assert tools.tool_arguments_validate(name=name, arguments=json.dumps(arguments)) == arguments


def test_an_empty_arguments_string_is_an_empty_object() -> None:
    assert tools.tool_arguments_validate(name="describe_image", arguments="") == {}


def test_navigate_next_moves_the_terminal_once(session: VoiceSession, terminal: Terminal) -> None:
    images = list(Image.objects.filter(terminal=terminal).order_by("id"))
    version = terminal.version

    result = run(session, "navigate_gallery", {"action": "next"})

    terminal.refresh_from_db()
    assert terminal.current_image == images[1]
    assert terminal.version == version + 1
    assert result.output["ok"] is True
    assert result.output["version"] == terminal.version
    assert result.output["image"]["position"] == 2 and result.output["image"]["count"] == 3
    assert "picture 2 of 3" in result.output["message"]
    assert json.loads(result.output_text) == result.output
    call = ToolCall.objects.get()
    assert (call.call_id, call.name, call.status) == ("call_1", "navigate_gallery", "succeeded")
    assert call.arguments == {"action": "next"}


def test_goto_and_search_map_to_the_service_actions(
    session: VoiceSession, terminal: Terminal
) -> None:
    images = list(Image.objects.filter(terminal=terminal).order_by("id"))
    run(session, "navigate_gallery", {"action": "goto", "position": 3}, call_id="a")
    terminal.refresh_from_db()
    assert terminal.current_image == images[2]

    run(session, "navigate_gallery", {"action": "search", "query": "number 1"}, call_id="b")
    terminal.refresh_from_db()
    assert terminal.current_image == images[0]


def test_goto_without_position_is_refused_before_the_service(
    session: VoiceSession, terminal: Terminal
) -> None:
    version = terminal.version
    result = run(session, "navigate_gallery", {"action": "goto"})
    assert result.output["ok"] is False
    assert result.output["error"] == "invalid_arguments"
    assert "position" in result.output["message"]
    terminal.refresh_from_db()
    assert terminal.version == version
    assert ToolCall.objects.get().status == "failed"


def test_a_gallery_refusal_is_an_output_for_the_model(
    session: VoiceSession, terminal: Terminal
) -> None:
    version = terminal.version
    result = run(session, "navigate_gallery", {"action": "search", "query": "zebra"})
    assert result.output == {
        "ok": False,
        "message": "No image on this terminal matches “zebra”.",
        "error": "no_match",
    }
    result = run(session, "navigate_gallery", {"action": "goto", "position": 9}, call_id="c2")
    assert result.output["ok"] is False and result.output["error"] == "invalid_position"
    terminal.refresh_from_db()
    assert terminal.version == version


def test_a_replayed_call_id_returns_the_stored_output_without_running_again(
    session: VoiceSession, terminal: Terminal
) -> None:
    first = run(session, "navigate_gallery", {"action": "next"}, call_id="call_r")
    again = run(session, "navigate_gallery", {"action": "next"}, call_id="call_r")
    terminal.refresh_from_db()
    assert first.replayed is False and again.replayed is True
    assert again.output == first.output
    assert terminal.version == first.output["version"]
    assert ToolCall.objects.count() == 1


def test_call_ids_are_per_session(session: VoiceSession, terminal: Terminal, owner: Any) -> None:
    other = VoiceSession.objects.create(
        user=owner, terminal=terminal, upstream="engine", model="m", voice="verse"
    )
    run(session, "navigate_gallery", {"action": "next"}, call_id="call_same")
    result = run(other, "navigate_gallery", {"action": "next"}, call_id="call_same")
    assert result.replayed is False
    terminal.refresh_from_db()
    assert terminal.version == 2


def test_generate_queues_an_image_on_the_terminal(
    session: VoiceSession, terminal: Terminal, owner: Any
) -> None:
    result = run(session, "generate_image", {"prompt": "a lighthouse at dusk", "style": "ink"})
    assert result.output["ok"] is True
    image = Image.objects.get(pk=result.output["image_id"])
    assert image.status == Image.Status.QUEUED
    assert (image.owner, image.terminal) == (owner, terminal)
    assert (image.prompt, image.style) == ("a lighthouse at dusk", "ink")
    assert "a lighthouse at dusk" in result.output["message"]


def test_describe_the_current_or_a_given_image(
    session: VoiceSession, terminal: Terminal, make_image: Callable[..., Image]
) -> None:
    assert terminal.current_image is not None
    Image.objects.filter(pk=terminal.current_image.pk).update(
        title="Fox at night", description="A fox looks up at a blue moon."
    )
    result = run(session, "describe_image", {})
    assert result.output["ok"] is True
    assert result.output["image"]["title"] == "Fox at night"
    assert "Fox at night" in result.output["message"]
    assert "A fox looks up at a blue moon." in result.output["message"]

    last = Image.objects.filter(terminal=terminal).order_by("id").last()
    assert last is not None
    by_id = run(session, "describe_image", {"image_id": last.pk}, call_id="d2")
    assert by_id.output["image"]["id"] == last.pk
    assert last.prompt in by_id.output["message"]

    elsewhere = make_image(prompt="a secret harbour elsewhere")
    foreign = run(session, "describe_image", {"image_id": elsewhere.pk}, call_id="d3")
    assert foreign.output["ok"] is False
    assert foreign.output["error"] == "image_not_found"
    assert elsewhere.prompt not in foreign.output["message"]


def test_edit_makes_a_new_image_from_the_current_one(
    session: VoiceSession, terminal: Terminal
) -> None:
    current = terminal.current_image
    assert current is not None
    result = run(session, "edit_image", {"instruction": "make it snowy"})
    assert result.output["ok"] is True
    edited = Image.objects.get(pk=result.output["image_id"])
    assert edited.source == current
    assert edited.terminal == terminal
    assert edited.status == Image.Status.QUEUED
    assert edited.prompt == f"{current.prompt}, make it snowy"


def test_rights_are_checked_at_call_time(
    terminal: Terminal,
    make_user: Callable[..., Any],
    add_member: Callable[..., TerminalMembership],
) -> None:
    member = make_user("member")
    membership = add_member(terminal, member)
    session = VoiceSession.objects.create(
        user=member, terminal=terminal, upstream="engine", model="m", voice="verse"
    )
    membership.role = TerminalMembership.Role.VIEWER
    membership.save()
    version = terminal.version

    result = run(session, "navigate_gallery", {"action": "next"})
    generated = run(session, "generate_image", {"prompt": "a boat"}, call_id="g")

    assert result.output["ok"] is False and result.output["error"] == "forbidden"
    assert generated.output["ok"] is False
    terminal.refresh_from_db()
    assert terminal.version == version
    assert not Image.objects.filter(prompt="a boat").exists()


def test_an_unknown_tool_is_an_output_not_an_exception(session: VoiceSession) -> None:
    result = run(session, "delete_everything", {})
    assert result.output["ok"] is False
    assert "delete_everything" in result.output["message"]
    assert ToolCall.objects.get().status == "failed"


def test_a_call_id_must_be_usable(session: VoiceSession) -> None:
    with pytest.raises(ValueError):
        run(session, "describe_image", {}, call_id="")
    with pytest.raises(ValueError):
        run(session, "describe_image", {}, call_id="x" * 101)


def test_pictures_past_the_hourly_allowance_are_refused_to_the_model(
    session: VoiceSession, settings: Any
) -> None:
    settings.IMAGES_PER_HOUR = 2
    made = [
        run(session, "generate_image", {"prompt": "a lighthouse"}, call_id="g1"),
        run(session, "edit_image", {"instruction": "make it snowy"}, call_id="e1"),
    ]
    assert [result.output["ok"] for result in made] == [True, True]
    refused = run(session, "generate_image", {"prompt": "a third one"}, call_id="g2")
    assert (refused.output["ok"], refused.output["error"]) == (False, "rate_limited")
    assert refused.output["message"].startswith("You have asked for 2 pictures this hour")
    assert Image.objects.filter(prompt="a third one").count() == 0
