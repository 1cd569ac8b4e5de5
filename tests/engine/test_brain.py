"""The brain on typed text: tool choice, enum synonyms, numbers, free text, replies."""

import json
from typing import Any

import pytest

from tests.engine.utterances import GALLERY_TOOLS
from voice.engine.brain import FunctionCall, Reply, confirm, decide
from voice.engine.numbers import parse_number

THERMOSTAT: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "set_temperature",
        "description": "Set the thermostat to a temperature in degrees.",
        "parameters": {
            "type": "object",
            "properties": {"degrees": {"type": "integer", "minimum": 5, "maximum": 35}},
            "required": ["degrees"],
        },
    }
]
MUSIC: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "play",
        "description": "Play a track by name.",
        "parameters": {
            "type": "object",
            "properties": {"track": {"type": "string"}},
            "required": ["track"],
        },
    },
    {
        "type": "function",
        "name": "control",
        "description": "Control playback.",
        "parameters": {
            "type": "object",
            "properties": {"action": {"type": "string", "enum": ["pause", "resume", "skip"]}},
            "required": ["action"],
        },
    },
]


@pytest.mark.parametrize(
    ("text", "arguments"),
    [
        ("show me the next picture", {"action": "next"}),
        ("next", {"action": "next"}),
        ("another one", {"action": "next"}),
        ("skip", {"action": "next"}),
        ("go back", {"action": "previous"}),
        ("previous one", {"action": "previous"}),
        ("the one before", {"action": "previous"}),
        ("first image", {"action": "first"}),
        ("take me back to the start", {"action": "first"}),
        ("go to the beginning", {"action": "first"}),
        ("show me the latest one", {"action": "last"}),
        ("the last one please", {"action": "last"}),
        ("open image three", {"action": "goto", "position": 3}),
        ("go to picture number five", {"action": "goto", "position": 5}),
        ("show the third picture", {"action": "goto", "position": 3}),
        ("jump to twenty one", {"action": "goto", "position": 21}),
        ("go to the twenty first image", {"action": "goto", "position": 21}),
        ("open picture 7", {"action": "goto", "position": 7}),
        ("search for foxes", {"action": "search", "query": "foxes"}),
        ("find pictures of red boats", {"action": "search"}),
    ],
)
def test_navigation(text: str, arguments: dict[str, Any]) -> None:
    result = decide(text=text, tools=GALLERY_TOOLS)
    assert isinstance(result, FunctionCall), result
    assert result.name == "navigate_gallery"
    for key, value in arguments.items():
        assert result.arguments[key] == value
    assert set(result.arguments) <= {"action", "position", "query"}
    if "position" not in arguments:
        assert "position" not in result.arguments  # optional, not said: omitted


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("paint a red fox in the snow", "a red fox in the snow"),
        ("draw a city at night", "a city at night"),
        ("can you paint me a picture of a dragon please", "a dragon"),
        ("generate an image of a lighthouse in a storm", "a lighthouse in a storm"),
        ("create three cats on a sofa", "three cats on a sofa"),
    ],
)
def test_image_prompts_are_the_words_after_the_verb(text: str, prompt: str) -> None:
    result = decide(text=text, tools=GALLERY_TOOLS)
    assert result == FunctionCall(name="generate_image", arguments={"prompt": prompt})


def test_optional_style_only_when_said() -> None:
    result = decide(text="paint a castle in watercolor style", tools=GALLERY_TOOLS)
    assert isinstance(result, FunctionCall)
    assert result.arguments["style"] == "watercolor"
    assert "castle" in result.arguments["prompt"]


def test_prompt_verb_without_a_prompt_asks_for_it() -> None:
    assert isinstance(decide(text="paint", tools=GALLERY_TOOLS), Reply)


@pytest.mark.parametrize(
    ("text", "asked"),
    [
        # What the recogniser made of "go to the first picture" in two voices.
        ("alter the third the", "What instruction would you like?"),
        ("alter the third picture", "What instruction would you like?"),
        ("change it", "What instruction would you like?"),
        ("edit the picture", "What instruction would you like?"),
        ("paint the third", "What prompt would you like?"),
        ("paint it", "What prompt would you like?"),
    ],
)
def test_a_verb_and_a_position_are_no_instruction_so_it_is_asked_for(text: str, asked: str) -> None:
    """Editing or painting on a transcript that says nothing but the verb would act on
    what was most likely a misheard navigation."""
    assert decide(text=text, tools=GALLERY_TOOLS) == Reply(text=asked)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("turn it blue", FunctionCall("edit_image", {"instruction": "turn it blue"})),
        ("make it brighter", FunctionCall("edit_image", {"instruction": "make it brighter"})),
        (
            "edit the picture to add a moon",
            FunctionCall("edit_image", {"instruction": "add a moon"}),
        ),
        ("paint seven dwarfs", FunctionCall("generate_image", {"prompt": "seven dwarfs"})),
    ],
)
def test_an_instruction_with_something_to_do_is_acted_on(text: str, expected: FunctionCall) -> None:
    assert decide(text=text, tools=GALLERY_TOOLS) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("describe this image", FunctionCall("describe_image", {})),
        ("what is in this picture", FunctionCall("describe_image", {})),
        ("describe image two", FunctionCall("describe_image", {"image_id": 2})),
        ("describe image to", FunctionCall("describe_image", {"image_id": 2})),
        (
            "make it black and white",
            FunctionCall("edit_image", {"instruction": "make it black and white"}),
        ),
        (
            "edit the image to make it sepia",
            FunctionCall("edit_image", {"instruction": "make it sepia"}),
        ),
    ],
)
def test_describe_and_edit(text: str, expected: FunctionCall) -> None:
    assert decide(text=text, tools=GALLERY_TOOLS) == expected


@pytest.mark.parametrize(
    ("text", "degrees"),
    [
        ("set the temperature to twenty one degrees", 21),
        ("set the thermostat to 19", 19),
        ("please set the heating to eighteen", 18),
        ("set temperature to thirty", 30),
    ],
)
def test_another_tool_set_thermostat(text: str, degrees: int) -> None:
    result = decide(text=text, tools=THERMOSTAT)
    assert result == FunctionCall(name="set_temperature", arguments={"degrees": degrees})


def test_out_of_range_number_is_refused_with_the_range() -> None:
    result = decide(text="set the temperature to ninety", tools=THERMOSTAT)
    assert isinstance(result, Reply)
    assert "5" in result.text and "35" in result.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("play yellow submarine", FunctionCall("play", {"track": "yellow submarine"})),
        ("pause the music", FunctionCall("control", {"action": "pause"})),
        ("stop", FunctionCall("control", {"action": "pause"})),
        ("skip this song", FunctionCall("control", {"action": "skip"})),
        ("next song", FunctionCall("control", {"action": "skip"})),
        ("resume", FunctionCall("control", {"action": "resume"})),
        ("keep playing", FunctionCall("control", {"action": "resume"})),
    ],
)
def test_another_tool_set_music(text: str, expected: FunctionCall) -> None:
    assert decide(text=text, tools=MUSIC) == expected


@pytest.mark.parametrize("text", ["hello", "hello there", "what can you do", "thank you"])
def test_small_talk_gets_a_reply_naming_capabilities(text: str) -> None:
    result = decide(text=text, tools=GALLERY_TOOLS)
    assert isinstance(result, Reply)
    if text != "thank you":
        assert "generate a new image" in result.text


def test_no_tool_fits_and_no_tools_at_all() -> None:
    assert isinstance(decide(text="what is the weather in paris", tools=MUSIC), Reply)
    assert isinstance(decide(text="next", tools=[]), Reply)
    assert isinstance(decide(text="", tools=GALLERY_TOOLS), Reply)


def test_malformed_tool_schemas_do_not_crash() -> None:
    tools: list[dict[str, Any]] = [
        {"type": "function", "name": "ping"},
        {"type": "function", "name": "odd", "parameters": {"properties": "nope"}},
        {"type": "web_search"},
        {"name": ""},
    ]
    assert decide(text="ping", tools=tools) == FunctionCall("ping", {})


@pytest.mark.parametrize(
    ("words", "value"),
    [
        ("three", 3),
        ("twenty one", 21),
        ("twenty-one", 21),
        ("third", 3),
        ("twenty first", 21),
        ("a hundred", 100),
        ("one hundred and five", 105),
        ("42", 42),
        ("3rd", 3),
        ("ninety nine", 99),
    ],
)
def test_numbers_said_as_words(words: str, value: int) -> None:
    parsed = parse_number(words.split())
    assert parsed is not None and parsed[0] == value


@pytest.mark.parametrize(
    ("output", "says"),
    [
        (json.dumps({"ok": True, "message": "Showing picture 3 of 7."}), "Showing picture 3 of 7."),
        (json.dumps({"ok": True, "title": "A red fox"}), "Here is A red fox."),
        (
            json.dumps({"ok": False, "error": "No picture 9"}),
            "Sorry, navigate gallery failed: No picture 9.",
        ),
        (json.dumps({"status": "failed"}), "Sorry, navigate gallery failed."),
        (json.dumps({"error": {"message": "quota"}}), "Sorry, navigate gallery failed: quota."),
        (json.dumps({"ok": True}), "Done."),
        ("moved on", "moved on."),
        ("", "Done."),
    ],
)
def test_confirmations(output: str, says: str) -> None:
    assert confirm(name="navigate_gallery", arguments={"action": "next"}, output=output) == says
