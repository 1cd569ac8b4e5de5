"""The engine's brain: from what the caller said to a function call or a short answer.

Only the session's tool schemas are used: each tool is scored by how much of the
utterance its name words, enum values, parameter names and description explain
(through the lexicon's general synonym groups), then the best tool's arguments are
filled from the utterance — enum values, numbers said as words, and free text after
the command verb — and checked against the schema. When no tool fits, or a required
argument is missing, the answer is a short spoken reply instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from voice.engine import lexicon
from voice.engine.numbers import parse_number

# A tool must explain at least this much of the utterance to be called.
_MIN_SCORE = 2.5
_VERB_WEIGHT = 3.0
_ENUM_WEIGHT = 3.0
_NAME_WEIGHT = 1.5
_PARAM_WEIGHT = 0.75
_NUMBER_WEIGHT = 2.0
_DESCRIPTION_WEIGHT = 0.5
_DESCRIPTION_CAP = 1.5

# Free text for parameters like these is the whole request, not just what follows the verb.
_INSTRUCTION_NAMES = frozenset(
    {"instruction", "instructions", "request", "command", "message", "text", "change"}
)
# Enum values that mean "go to a numbered position": chosen when a number is said.
_POSITION_VALUES = frozenset(lexicon.synonyms("goto")) | {"index", "select", "position"}
# "one" is a number only after words like these ("image one", "go to one"); elsewhere
# it is a pronoun ("the next one", "the latest one").
_ONE_IS_NUMBER_AFTER = frozenset({"to", "at", "is", "of", "for", "number", "no", "position"})
# Recognisers write a final number as its homophone: "describe image to" means two.
_HOMOPHONES = {"to": "two", "too": "two", "for": "four", "won": "one", "ate": "eight"}
_PROMPT_PREFIX = re.compile(
    r"^(?:(?:me|us|for me|for us)\s+)?"
    r"(?:(?:a|an|the|some)\s+(?:picture|image|photo|painting|drawing|illustration|sketch|"
    r"artwork|pic)s?\s+(?:of|showing|with)\s+)?"
)
_FREE_TEXT_LEAD = re.compile(r"^(?:for|about|of|to|that|me|us|please)\s+")
_TRAILING_POLITE = re.compile(r"\s+(?:please|thanks|thank you|now)$")
# Words that point at a numbered thing rather than describe it ("picture number five").
_NUMBER_CUES = frozenset({"number", "no", "position", "item", "page", "slot", "index"})
_HELP = ("what can you do", "help", "what do you do", "what are you")
_GREETINGS = frozenset({"hello", "hi", "hey", "morning", "evening", "afternoon"})
_THANKS = frozenset({"thanks", "thank", "cheers"})
_FAILED_STATUSES = frozenset({"error", "failed", "failure", "denied", "forbidden", "invalid"})


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Reply:
    text: str


@dataclass
class _Match:
    """How one tool explains the utterance."""

    tool: dict[str, Any]
    score: float = 0.0
    enums: dict[str, str] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)  # token positions explained by the match
    trigger_end: int = -1  # first token after the command verb
    name_verb_end: int = -1  # first token after the tool's own name verb, if said


def _find(tokens: list[str], phrase: str) -> tuple[int, int] | None:
    """Position ``(start, end)`` of the first occurrence of ``phrase`` in ``tokens``."""
    target = phrase.split()
    n = len(target)
    for i in range(len(tokens) - n + 1):
        if tokens[i : i + n] == target:
            return i, i + n
    return None


def _best_phrase(tokens: list[str], phrases: tuple[str, ...]) -> tuple[str, int, int] | None:
    """The longest phrase of ``phrases`` present in ``tokens`` (earliest on a tie)."""
    best: tuple[str, int, int] | None = None
    for phrase in phrases:
        found = _find(tokens, phrase)
        if found is None:
            continue
        if best is None or (len(phrase.split()), -found[0]) > (
            len(best[0].split()),
            -best[1],
        ):
            best = (phrase, found[0], found[1])
    return best


def _value_phrases(value: str) -> tuple[str, ...]:
    words = lexicon.identifier_words(value)
    spoken = " ".join(words)
    phrases = [spoken]
    for candidate in (value.lower(), spoken, *words):
        phrases.extend(lexicon.synonyms(candidate))
    return tuple(dict.fromkeys(p for p in phrases if p))


def _phrase_weight(phrase: str) -> float:
    # A longer phrase is stronger evidence ("make it" over "make").
    return 1.0 + 0.5 * (len(phrase.split()) - 1)


def _score(tool: dict[str, Any], tokens: list[str], *, number_said: bool) -> _Match:
    match = _Match(tool=tool)
    name_words = lexicon.identifier_words(str(tool.get("name", "")))
    for index, word in enumerate(name_words):
        found = _best_phrase(tokens, lexicon.synonyms(word))
        if found is None:
            continue
        phrase, start, end = found
        weight = _VERB_WEIGHT if index == 0 else _NAME_WEIGHT
        match.score += weight * _phrase_weight(phrase)
        match.used.update(range(start, end))
        if index == 0:
            match.trigger_end = max(match.trigger_end, end)
            own = _find(tokens, word)
            if own is not None:
                match.name_verb_end = own[1]
    properties = lexicon.tool_properties(tool)
    for pname, schema in properties.items():
        values = lexicon.enum_values(schema)
        best: tuple[float, int, str, int, int] | None = None
        for value in values:
            if value.lower() in _POSITION_VALUES and not number_said:
                continue
            phrases = _value_phrases(value)
            found = _best_phrase(tokens, phrases)
            if found is None:
                continue
            phrase, start, end = found
            direct = phrase in (value.lower(), " ".join(lexicon.identifier_words(value)))
            weight = _ENUM_WEIGHT * _phrase_weight(phrase) * (1.0 if direct else 0.9)
            # On equal evidence the value said last wins: "back to the start" → first.
            if best is None or (weight, start) > (best[0], best[1]):
                best = (weight, start, value, start, end)
        if best is not None:
            match.score += best[0]
            match.enums[pname] = best[2]
            match.used.update(range(best[3], best[4]))
            match.trigger_end = max(match.trigger_end, best[4])
        for word in lexicon.identifier_words(pname):
            if word not in lexicon.STOPWORDS and word in tokens:
                match.score += _PARAM_WEIGHT
    description = set(lexicon.content_words(str(tool.get("description", ""))))
    described = sum(1 for i, t in enumerate(tokens) if t in description and i not in match.used)
    match.score += min(_DESCRIPTION_CAP, described * _DESCRIPTION_WEIGHT)
    if number_said and any(
        lexicon.schema_type(s) in ("integer", "number") and not lexicon.enum_values(s)
        for s in properties.values()
    ):
        match.score += _NUMBER_WEIGHT
    return match


def _numbers(tokens: list[str], used: set[int], objects: set[str]) -> list[tuple[int, int, int]]:
    """Numbers said in the unexplained tokens: ``(value, start, end)``."""
    if len(tokens) > 1 and tokens[-1] in _HOMOPHONES:
        before = tokens[-2]
        if before in objects or before in _NUMBER_CUES:
            tokens = [*tokens[:-1], _HOMOPHONES[tokens[-1]]]
    found = []
    i = 0
    while i < len(tokens):
        if i in used or tokens[i] in ("a", "and"):
            i += 1
            continue
        parsed = parse_number(tokens, i)
        if parsed is None:
            i += 1
            continue
        value, length, _ordinal = parsed
        if (
            tokens[i] == "one"
            and length == 1
            and i > 0
            and tokens[i - 1] not in _ONE_IS_NUMBER_AFTER
            and tokens[i - 1] not in objects
        ):
            i += 1
            continue
        found.append((value, i, i + length))
        i += length
    return found


def _object_words(tools: list[dict[str, Any]]) -> set[str]:
    """Words that name things the tools act on ("image", "picture", "gallery")."""
    out: set[str] = set()
    for tool in tools:
        for word in lexicon.identifier_words(str(tool.get("name", ""))):
            out.update(lexicon.synonyms(word))
    return {w for w in out if " " not in w}


def _clean_free_text(text: str) -> str:
    text = text.strip()
    previous = None
    while previous != text:
        previous = text
        text = _FREE_TEXT_LEAD.sub("", text)
        text = _PROMPT_PREFIX.sub("", text, count=1).strip()
    return _TRAILING_POLITE.sub("", text).strip()


def _strip_leads(tokens: list[str]) -> list[str]:
    changed = True
    while changed and tokens:
        changed = False
        for phrase in sorted(lexicon.LEAD_PHRASES, key=len, reverse=True):
            n = len(phrase.split())
            if tokens[:n] == phrase.split() and len(tokens) > n:
                tokens = tokens[n:]
                changed = True
                break
    return tokens


def _extract_style(tokens: list[str], pname: str) -> tuple[str, set[int]] | None:
    """A value said as "in (the style of) X" / "in X style" / "X style" for a param named X."""
    key = pname.lower()
    if key not in tokens:
        return None
    at = tokens.index(key)
    if at + 2 < len(tokens) and tokens[at + 1] == "of":
        value = tokens[at + 2 :]
        start = at - 2 if at >= 2 and tokens[at - 2 : at] == ["in", "the"] else at
        return " ".join(value), set(range(start, len(tokens)))
    start = at - 1
    while start >= 0 and tokens[start] not in ("in", "with", "as") and at - start <= 3:
        start -= 1
    if start >= 0 and tokens[start] in ("in", "with", "as") and start + 1 < at:
        value = [t for t in tokens[start + 1 : at] if t not in ("a", "an", "the")]
        if value:
            return " ".join(value), set(range(start, at + 1))
    return None


def _ask(pname: str, schema: dict[str, Any]) -> Reply:
    label = " ".join(lexicon.identifier_words(pname))
    values = lexicon.enum_values(schema)
    if values:
        return Reply(text=f"Which {label}: {', '.join(values)}?")
    return Reply(text=f"What {label} would you like?")


def _build_arguments(
    match: _Match, tokens: list[str], tools: list[dict[str, Any]]
) -> FunctionCall | Reply:
    tool = match.tool
    properties = lexicon.tool_properties(tool)
    required = lexicon.tool_required(tool)
    order = [p for p in required if p in properties] + [p for p in properties if p not in required]
    arguments: dict[str, Any] = {}
    used = set(match.used)

    objects = _object_words(tools)
    numbers = _numbers(tokens, used, objects)
    numeric = [p for p in order if lexicon.schema_type(properties[p]) in ("integer", "number")]
    numeric = [p for p in numeric if not lexicon.enum_values(properties[p])]
    for pname, (value, start, end) in zip(numeric, numbers, strict=False):
        schema = properties[pname]
        low, high = schema.get("minimum"), schema.get("maximum")
        label = " ".join(lexicon.identifier_words(pname))
        if (isinstance(low, int | float) and value < low) or (
            isinstance(high, int | float) and value > high
        ):
            return Reply(text=f"The {label} must be between {low} and {high}.")
        arguments[pname] = value
        used.update(range(start, end))

    for pname in order:
        schema = properties[pname]
        values = lexicon.enum_values(schema)
        if not values:
            continue
        chosen = match.enums.get(pname)
        positional = [v for v in values if v.lower() in _POSITION_VALUES]
        if numbers and numeric and positional and (chosen is None or chosen in positional):
            chosen = positional[0]
        elif chosen in positional and not numbers and len(values) > 1:
            chosen = None
        if chosen is None:
            continue
        if lexicon.schema_type(schema) == "integer":
            arguments[pname] = int(chosen)
        else:
            arguments[pname] = chosen

    free_taken = False
    for pname in order:
        schema = properties[pname]
        if pname in arguments or lexicon.schema_type(schema) != "string":
            continue
        if lexicon.enum_values(schema):
            continue
        style = _extract_style(tokens, pname)
        if style is not None and pname not in required:
            arguments[pname] = style[0]
            used.update(style[1])
            continue
        if free_taken:
            continue
        extracted = used - match.used
        free = _free_text(pname, match, tokens, extracted, objects, required=pname in required)
        if free:
            arguments[pname] = free
            free_taken = True

    for pname in required:
        if pname not in arguments and pname in properties:
            return _ask(pname, properties[pname])
    for pname, schema in properties.items():
        if lexicon.schema_type(schema) == "boolean" and pname in required:
            arguments[pname] = not any(t in ("off", "no", "false", "disable") for t in tokens)
    return FunctionCall(name=str(tool["name"]), arguments=arguments)


def _free_text(
    pname: str,
    match: _Match,
    tokens: list[str],
    used: set[int],
    objects: set[str],
    *,
    required: bool,
) -> str:
    """Free text for a string parameter, or "" when the utterance holds none."""
    instruction = any(w in _INSTRUCTION_NAMES for w in lexicon.identifier_words(pname))
    if instruction and match.name_verb_end < 0:
        start = 0
    elif instruction:
        start = match.name_verb_end
    else:
        start = max(match.trigger_end, 0)
    tail = [t for i, t in enumerate(tokens) if i >= start and i not in used]
    text = " ".join(tail)
    if instruction and start > 0:
        # Longest names first, whole words only: "picture" is not "pic" + "ture".
        names = "|".join(re.escape(o) for o in sorted(objects, key=len, reverse=True))
        text = re.sub(
            r"^(?:(?:the|this|that|my|it)\s+)?(?:(?:" + names + r")\b)?\s*"
            r"(?:to|and|so|so that|by)?\s*",
            "",
            text,
        )
    text = _clean_free_text(text)
    meaningful = [
        w
        for w in lexicon.words(text)
        if w not in lexicon.STOPWORDS and w not in objects and w not in _NUMBER_CUES
    ]
    if required:
        return text if _says_what(meaningful, match.tool) else ""
    return text if meaningful else ""


def _says_what(words: list[str], tool: dict[str, Any]) -> bool:
    """Whether a required free text holds more than the tool's own verb and a position:
    "alter the third picture" or "paint it" says what to do to nothing, and is most often
    a misheard navigation, so it is asked for instead of acted on."""
    name_words = lexicon.identifier_words(str(tool.get("name", "")))
    verbs = (
        {word for phrase in lexicon.synonyms(name_words[0]) for word in phrase.split()}
        if name_words
        else set()
    )
    return any(word not in verbs and parse_number([word]) is None for word in words)


def _capabilities(tools: list[dict[str, Any]]) -> str:
    parts = []
    for tool in tools:
        description = str(tool.get("description") or "").strip()
        if description:
            sentence = re.split(r"(?<=[.!?:;])\s|[.!?:;]$", description)[0].rstrip(".!?:;")
            phrase = sentence[0].lower() + sentence[1:] if sentence else sentence
        else:
            phrase = " ".join(lexicon.identifier_words(str(tool.get("name", ""))))
        if phrase:
            parts.append(phrase)
    if not parts:
        return "I can chat, but no actions are set up right now."
    if len(parts) == 1:
        return f"I can {parts[0]}."
    return f"I can {', '.join(parts[:-1])}, or {parts[-1]}."


def _function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        t
        for t in tools
        if isinstance(t, dict)
        and t.get("type", "function") == "function"
        and isinstance(t.get("name"), str)
        and t["name"]
    ]


def decide(
    *, text: str, tools: list[dict[str, Any]], instructions: str = ""
) -> FunctionCall | Reply:
    """Map what the caller said (or typed) to one of ``tools``, or to a short reply."""
    functions = _function_tools(tools)
    tokens = _strip_leads(lexicon.words(text))
    if not tokens:
        return Reply(text="Sorry, I didn't catch that.")
    # An ordinal that a tool takes as an enum value ("first") is that value, not a number.
    enum_words = {
        phrase
        for tool in functions
        for schema in lexicon.tool_properties(tool).values()
        for value in lexicon.enum_values(schema)
        for phrase in _value_phrases(value)
    }
    taken = {i for i, t in enumerate(tokens) if t in enum_words}
    number_said = bool(_numbers(tokens, taken, _object_words(functions)))
    matches = [_score(tool, tokens, number_said=number_said) for tool in functions]
    best = max(matches, key=lambda m: m.score, default=None)
    if best is not None and best.score >= _MIN_SCORE:
        return _build_arguments(best, tokens, functions)
    if any(_find(tokens, phrase) for phrase in _HELP):
        return Reply(text=_capabilities(functions))
    if any(t in _THANKS for t in tokens):
        return Reply(text="You're welcome.")
    if any(t in _GREETINGS for t in tokens):
        return Reply(text=f"Hello! {_capabilities(functions)}")
    return Reply(text=f"Sorry, I can't do that. {_capabilities(functions)}")


def _says_failed(data: dict[str, Any]) -> bool:
    if data.get("ok") is False or data.get("success") is False:
        return True
    status = data.get("status")
    return isinstance(status, str) and status.lower() in _FAILED_STATUSES


def _sentence(text: str) -> str:
    text = " ".join(text.split())[:200].rstrip()
    return text if text.endswith((".", "!", "?")) else f"{text}."


def confirm(*, name: str, arguments: dict[str, Any], output: str) -> str:
    """A short spoken confirmation of a tool's result (``function_call_output``)."""
    action = " ".join(lexicon.identifier_words(name)) or "that"
    try:
        data = json.loads(output)
    except (TypeError, ValueError):
        data = output
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        message = data.get("message")
        if error or _says_failed(data):
            reason = error or message
            if isinstance(reason, str) and reason.strip():
                return _sentence(f"Sorry, {action} failed: {reason.strip()}")
            return f"Sorry, {action} failed."
        if isinstance(message, str) and message.strip():
            return _sentence(message)
        title = data.get("title")
        if isinstance(title, str) and title.strip():
            return _sentence(f"Here is {title.strip()}")
        for key in ("description", "summary", "text", "result"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                return _sentence(value)
        return "Done."
    if isinstance(data, str) and data.strip():
        return _sentence(data)
    return "Done."
