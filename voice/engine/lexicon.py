"""The engine's small English lexicon: words, synonyms and the vocabulary of free text.

Shared by the recogniser's grammar and the brain so that every phrasing the grammar can
hear is one the brain can map to a tool. Nothing here names a particular tool: it is
general command English (next/back, make/paint, show/open...).
"""

from __future__ import annotations

import re
from typing import Any

_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# Groups of words that mean the same thing in a command. A group's first word is its
# name; a tool word or enum value is matched by any word or phrase of its group.
SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = (
    ("next", "forward", "forwards", "another", "skip", "following", "onward", "ahead"),
    ("previous", "back", "backward", "backwards", "before", "prior", "go back", "earlier"),
    ("first", "start", "beginning", "initial", "very first"),
    ("last", "end", "latest", "final", "newest", "most recent"),
    (
        "goto",
        "go to",
        "jump to",
        "jump",
        "open",
        "select",
        "take me to",
        "position",
        "number",
        "show",
        "show me",
        "display",
        "bring up",
    ),
    ("search", "find", "look for", "search for", "look up", "seek"),
    ("generate", "create", "make", "paint", "draw", "render", "produce", "imagine", "sketch"),
    ("edit", "change", "modify", "adjust", "alter", "tweak", "turn", "make it", "recolor"),
    ("describe", "explain", "tell me about", "what is in", "what's in", "caption", "what is"),
    ("navigate", "go", "move", "browse", "flip", "switch", "scroll"),
    ("show", "display", "view", "see", "look at", "bring up"),
    ("image", "picture", "photo", "painting", "drawing", "artwork", "pic", "illustration"),
    ("gallery", "collection", "album", "slideshow"),
    ("pause", "hold", "freeze", "stop", "wait"),
    ("resume", "continue", "unpause", "carry on", "keep going", "keep playing"),
    ("play", "put on", "listen to"),
    ("set", "put", "adjust to"),
    ("temperature", "heat", "heating", "thermostat", "warmth"),
    ("increase", "raise", "up", "higher", "more", "louder", "warmer"),
    ("decrease", "lower", "down", "less", "quieter", "cooler", "reduce"),
    ("delete", "remove", "erase", "discard", "trash"),
    ("save", "keep", "store"),
    ("song", "track", "tune", "music"),
    ("volume", "loudness", "sound level"),
)


def _wordlist(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# Words that carry no command meaning in a tool description or an utterance.
STOPWORDS = frozenset(
    _wordlist(
        """a an the this that these those it its to of in on at by for from with and or but
    is are be was were been being do does did can could would should will shall may might
    me my mine you your we our us i he she they them their his her please just now then
    so some any all each every one ones which what who whom whose when where how there
    here if as into onto about over under up out off than too very also only not no yes
    let lets let's want like okay ok hey hi hello well oh uh um get gets got give using
    use used via per current currently given optional required e g eg etc"""
    )
)

# Phrases a person says around a command; the grammar accepts them and the brain drops them.
LEAD_PHRASES = (
    "please",
    "can you",
    "could you",
    "would you",
    "will you",
    "i want to",
    "i'd like to",
    "i want you to",
    "let's",
    "now",
    "okay",
    "ok",
    "hey",
    "and",
    "then",
    "just",
)
CHAT_PHRASES = (
    "hello",
    "hi",
    "hey there",
    "hello there",
    "good morning",
    "good evening",
    "thank you",
    "thanks",
    "what can you do",
    "help",
    "who are you",
    "how are you",
    "goodbye",
    "bye",
)
DETERMINERS = ("the", "this", "that", "a", "an", "my", "our", "its", "it", "me", "us")

# Everyday words for describing a picture, by role, so free text (an image prompt, an
# edit instruction, a search query) can be recognised without a tool having to list
# them. Filtered against the recogniser's dictionary when a model is built.
ADJECTIVES = _wordlist(
    """red orange yellow green blue purple pink brown black white gray golden silver
    dark bright pale colorful warm cool neon big small tiny huge giant little tall old
    young new ancient modern happy sad calm angry sleepy quiet beautiful cute scary
    strange magic mysterious peaceful lonely wild soft shiny sunny rainy snowy cloudy
    misty stormy frozen vintage futuristic realistic abstract surreal"""
)
NOUNS = _wordlist(
    """cat cats dog dogs fox foxes wolf bear bird birds owl eagle horse fish whale
    dolphin lion tiger elephant rabbit mouse deer dragon unicorn butterfly frog penguin
    duck robot robots man woman child children girl boy king queen knight wizard
    astronaut pirate tree trees forest flower flowers garden mountain mountains river
    lake sea ocean beach island desert valley field jungle waterfall volcano sky cloud
    clouds sun sunset moon star stars planet city town village street road bridge house
    castle tower temple building boat ship car train bus bicycle plane rocket balloon
    lighthouse table chair lamp book cup clock guitar piano apple cake pizza"""
)
SETTINGS = _wordlist(
    """snow rain night sunset sunrise morning evening winter summer autumn spring space
    forest desert city sea ocean mountains garden fog storm moonlight dark"""
)
PREPOSITIONS = _wordlist("in on at under over near with by above beside behind through")
ACTIVITIES = _wordlist(
    """sleeping running flying swimming dancing walking sitting standing playing reading
    singing jumping floating glowing"""
)
STYLES = _wordlist(
    """watercolor oil pencil ink cartoon anime pixel realistic abstract impressionist
    vintage retro futuristic minimalist surreal cinematic sepia monochrome"""
)


def words(text: str) -> list[str]:
    """Lower-case word tokens of ``text`` (keeps "what's", "twenty-one", "3rd")."""
    return _WORD.findall(text.lower())


def identifier_words(name: str) -> list[str]:
    """ "navigate_gallery" / "setTemperature" / "go-to" → their words."""
    spaced = _CAMEL.sub(" ", name).replace("_", " ").replace("-", " ")
    return words(spaced)


_GROUP_OF: dict[str, tuple[str, ...]] = {}
for _group in SYNONYM_GROUPS:
    for _member in _group:
        _GROUP_OF.setdefault(_member, _group)


def synonyms(word: str) -> tuple[str, ...]:
    """Every word or phrase meaning ``word`` in a command, ``word`` itself first."""
    group = _GROUP_OF.get(word)
    if group is None:
        return (word,)
    return (word, *(member for member in group if member != word))


def tool_properties(tool: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A tool's declared parameters (``{}`` when it declares none or declares them badly)."""
    parameters = tool.get("parameters")
    if not isinstance(parameters, dict):
        return {}
    properties = parameters.get("properties")
    if not isinstance(properties, dict):
        return {}
    return {str(k): v for k, v in properties.items() if isinstance(v, dict)}


def tool_required(tool: dict[str, Any]) -> list[str]:
    parameters = tool.get("parameters")
    required = parameters.get("required") if isinstance(parameters, dict) else None
    return [str(r) for r in required] if isinstance(required, list) else []


def enum_values(schema: dict[str, Any]) -> list[str]:
    values = schema.get("enum")
    if not isinstance(values, list):
        return []
    return [str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool)]


def schema_type(schema: dict[str, Any]) -> str:
    """The JSON type of a parameter; a nullable union reports its non-null type."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if kinds else None
    return str(kind) if isinstance(kind, str) else ("string" if "enum" in schema else "")


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry meaning (no stopwords, no digits)."""
    return [w for w in words(text) if w not in STOPWORDS and not w.isdigit()]
