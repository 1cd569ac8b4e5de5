"""The labelled set for the engine's voice accuracy: what was said → what should be called.

Each phrase is spoken in several takes (voices, speeds, background noise; see
``recordings.py``); a take counts as correct when VAD → STT → brain on its audio yields
the expected tool with the expected key arguments. Free text is judged on its key
content words ("fox", "snow"), not the exact string. ``tool=None`` expects a spoken reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.engine.recordings import Take
from voice.engine.brain import FunctionCall, Reply

# Shaped like the site's gallery tools, declared here: the engine must not depend on them.
GALLERY_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "navigate_gallery",
        "description": "Move through the terminal's gallery: next, previous, first or last "
        "image, go to a position, or search.",
        "parameters": {
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "enum": ["next", "previous", "first", "last", "goto", "search"],
                },
                "position": {"type": "integer", "minimum": 1, "description": "1-based"},
                "query": {"type": "string", "description": "Words to search for."},
            },
            "required": ["action"],
        },
    },
    {
        "type": "function",
        "name": "generate_image",
        "description": "Generate a new image from a text prompt.",
        "parameters": {
            "type": "object",
            "properties": {"prompt": {"type": "string"}, "style": {"type": "string"}},
            "required": ["prompt"],
        },
    },
    {
        "type": "function",
        "name": "describe_image",
        "description": "Describe the current image, or the image with the given id.",
        "parameters": {"type": "object", "properties": {"image_id": {"type": "integer"}}},
    },
    {
        "type": "function",
        "name": "edit_image",
        "description": "Edit the current image following an instruction.",
        "parameters": {
            "type": "object",
            "properties": {"instruction": {"type": "string"}},
            "required": ["instruction"],
        },
    },
]


@dataclass(frozen=True)
class Expected:
    """The call a phrase should produce: exact arguments plus key words in free text."""

    text: str
    tool: str | None
    arguments: dict[str, Any] = field(default_factory=dict)
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def judge(self, result: FunctionCall | Reply) -> bool:
        if self.tool is None:
            return isinstance(result, Reply)
        if not isinstance(result, FunctionCall) or result.name != self.tool:
            return False
        for key, value in self.arguments.items():
            if result.arguments.get(key) != value:
                return False
        for key, needed in self.words.items():
            said = str(result.arguments.get(key, "")).lower()
            if not all(word in said for word in needed):
                return False
        return True


NAV = "navigate_gallery"
PHRASES: tuple[Expected, ...] = (
    Expected("show me the next picture", NAV, {"action": "next"}),
    Expected("next image", NAV, {"action": "next"}),
    Expected("go back", NAV, {"action": "previous"}),
    Expected("previous one", NAV, {"action": "previous"}),
    Expected("show me the previous picture", NAV, {"action": "previous"}),
    Expected("first image", NAV, {"action": "first"}),
    Expected("go to the first picture", NAV, {"action": "first"}),
    Expected("show me the last picture", NAV, {"action": "last"}),
    Expected("the last one", NAV, {"action": "last"}),
    Expected("open image three", NAV, {"action": "goto", "position": 3}),
    Expected("go to picture number five", NAV, {"action": "goto", "position": 5}),
    Expected("show the second picture", NAV, {"action": "goto", "position": 2}),
    Expected("open picture twelve", NAV, {"action": "goto", "position": 12}),
    Expected("search for foxes", NAV, {"action": "search"}, {"query": ("fox",)}),
    Expected("describe this image", "describe_image", {}),
    Expected("describe image two", "describe_image", {"image_id": 2}),
    Expected("paint a red fox in the snow", "generate_image", {}, {"prompt": ("fox", "snow")}),
    Expected("draw a city at night", "generate_image", {}, {"prompt": ("city", "night")}),
    Expected(
        "create a blue whale in the ocean", "generate_image", {}, {"prompt": ("whale", "ocean")}
    ),
    Expected(
        "paint a dragon over the mountains",
        "generate_image",
        {},
        {"prompt": ("dragon", "mountain")},
    ),
    Expected("make it black and white", "edit_image", {}, {"instruction": ("black", "white")}),
    Expected("make it blue and green", "edit_image", {}, {"instruction": ("blue", "green")}),
    Expected("hello", None),
    Expected("what can you do", None),
)

# Voices the bundled acoustic model hears reliably in eSpeak's rendering; speeds and
# noise vary per take so no phrase is only ever heard one way.
VOICES = ("marin", "coral", "shimmer")
SPEEDS = (1.0, 1.2, 0.9)
NOISES: tuple[tuple[str | None, float], ...] = ((None, 0.0), ("pink", 20.0), ("white", 25.0))


def takes() -> list[tuple[Expected, Take]]:
    """Three takes of every phrase: each voice once, speeds and noise rotating."""
    out = []
    for i, expected in enumerate(PHRASES):
        for j, voice in enumerate(VOICES):
            speed = SPEEDS[(i + j) % len(SPEEDS)]
            noise, snr = NOISES[(i + 2 * j) % len(NOISES)]
            take = Take(
                text=expected.text,
                voice=voice,
                speed=speed,
                noise=noise,
                snr_db=snr or 20.0,
                seed=i * 10 + j,
            )
            out.append((expected, take))
    return out
