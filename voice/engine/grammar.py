"""The recogniser's language for one tool set: sentences a caller might say, as a corpus.

From the session's tools (name words, enum values, number and free-text parameters) and
the lexicon's general command English, this writes the sentences a caller is likely to
say — "show me the next picture", "go back", "open image three", "set the temperature to
twenty one degrees", "paint a red fox in the snow" — and turns them into a small trigram
language model (ARPA text) with pocketsphinx's own builder. A small model searched with
the decoder's lexicon tree is much faster than a loose JSGF grammar over the same words
and far more accurate than the general English model for these requests, while still
letting free text combine the vocabulary in new ways.

Words the pronouncing dictionary lacks are dropped: the decoder cannot hear them.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

from pocketsphinx.lm import ArpaBoLM

from voice.engine import lexicon
from voice.engine.numbers import spoken_numbers, spoken_ordinals

_GENERIC_VERBS = ("go to", "show", "show me", "open", "take me to", "bring up", "give me")
_GENERIC_OBJECTS = ("one", "it", "this")
_FREE_TEXT_SENTENCES_PER_VERB = 40
# Short fixed phrases are said often; repeating them gives them weight against free text.
_CHAT_REPEATS = 6


def _tool_parts(tools: list[dict[str, Any]]) -> dict[str, list[str]]:
    parts: dict[str, list[str]] = {
        "verbs": list(_GENERIC_VERBS),
        "objects": list(_GENERIC_OBJECTS),
        "values": [],
        "units": [],
        "free_verbs": [],
        "numeric": [],
        "words": [],
    }
    for tool in tools:
        name_words = lexicon.identifier_words(str(tool.get("name", "")))
        parts["words"] += name_words + lexicon.content_words(str(tool.get("description", "")))
        if name_words:
            parts["verbs"] += lexicon.synonyms(name_words[0])
            for word in name_words[1:]:
                parts["objects"] += lexicon.synonyms(word)
        free = False
        tool_values: list[str] = []
        for pname, schema in lexicon.tool_properties(tool).items():
            kind = lexicon.schema_type(schema)
            values = lexicon.enum_values(schema)
            for value in values:
                for word in (value, " ".join(lexicon.identifier_words(value))):
                    tool_values += lexicon.synonyms(word)
            if kind in ("integer", "number") and not values:
                parts["numeric"].append(pname)
                parts["units"] += lexicon.identifier_words(pname)
            if kind == "string" and not values:
                free = True
        parts["values"] += tool_values
        if free and name_words:
            parts["free_verbs"] += lexicon.synonyms(name_words[0])
            parts["free_verbs"] += [v for v in tool_values if v in lexicon.synonyms("search")]
    return {k: list(dict.fromkeys(v)) for k, v in parts.items()}


def _free_text(rng: random.Random) -> str:
    adjective = rng.choice(lexicon.ADJECTIVES)
    other = rng.choice(lexicon.ADJECTIVES)
    noun = rng.choice(lexicon.NOUNS)
    place = rng.choice(lexicon.SETTINGS)
    preposition = rng.choice(lexicon.PREPOSITIONS)
    shapes = (
        f"a {adjective} {noun} {preposition} the {place}",
        f"a {noun} {preposition} the {place}",
        f"a {noun} at {place}",
        f"a {adjective} {noun}",
        f"{noun}",
        f"{adjective} {noun}",
        f"a {noun} {rng.choice(lexicon.ACTIVITIES)} {preposition} the {place}",
        f"a {adjective} {noun} in {rng.choice(lexicon.STYLES)} style",
        f"it {adjective} and {other}",
        f"the {noun} {adjective}",
        f"{adjective} and {other}",
    )
    return rng.choice(shapes)


def sentences(tools: list[dict[str, Any]]) -> list[str]:
    """What a caller might say to these tools, one sentence per item (deterministic)."""
    rng = random.Random(0)  # a fixed sample of phrasings, so the model is reproducible
    parts = _tool_parts(tools)
    verbs, objects, values = parts["verbs"], parts["objects"], parts["values"]
    out: list[str] = []
    for value in values:
        out += [value, f"go {value}", f"{value} one"]
        for obj in objects:
            out += [
                f"{value} {obj}",
                f"the {value} {obj}",
                f"{rng.choice(verbs)} the {value} {obj}",
                f"{rng.choice(verbs)} me the {value} {obj}",
            ]
    for verb in verbs:
        for obj in objects:
            out += [f"{verb} {obj}", f"{verb} the {obj}", f"{verb} this {obj}"]
    if parts["numeric"]:
        units = parts["units"] + objects
        for number in spoken_numbers(100)[1:]:
            out += [
                f"{rng.choice(verbs)} to {rng.choice(objects)} {number}",
                f"{rng.choice(verbs)} the {rng.choice(objects)} to {number} {rng.choice(units)}",
                f"{rng.choice(verbs)} it to {number}",
            ]
        # Small numbers and ordinals are what people say most: every object gets them.
        for obj in objects:
            for number in spoken_numbers(30)[1:]:
                out += [
                    f"{rng.choice(verbs)} {obj} {number}",
                    f"{rng.choice(verbs)} {obj} number {number}",
                ]
            for ordinal in spoken_ordinals(20):
                out.append(f"{rng.choice(verbs)} the {ordinal} {obj}")
    for verb in parts["free_verbs"]:
        for _ in range(_FREE_TEXT_SENTENCES_PER_VERB):
            out.append(f"{verb} {_free_text(rng)}")
            out.append(f"{verb} me {_free_text(rng)}")
    for lead in lexicon.LEAD_PHRASES:
        out.append(f"{lead} {rng.choice(out)}")
    for phrase in lexicon.CHAT_PHRASES:
        out += [phrase] * _CHAT_REPEATS
    out += [" ".join(parts["words"])]
    return out


def language_model(tools: list[dict[str, Any]], known: Callable[[str], bool]) -> str:
    """An ARPA trigram model of :func:`sentences`, over words ``known`` to the dictionary."""
    corpus = []
    for sentence in sentences(tools):
        kept = [w for w in lexicon.words(sentence) if known(w)]
        if kept:
            corpus.append(" ".join(kept))
    builder = ArpaBoLM(text="\n".join(corpus), add_start=True)
    builder.compute()
    out = io.StringIO()
    builder.write(out)
    return out.getvalue()


# --- the strict command grammar ------------------------------------------------------

_GRAMMAR_NUMBERS = 30
_GRAMMAR_ORDINALS = 20
_GRAMMAR_LEADS = ("please", "can you", "could you", "now", "okay", "and", "then", "just")
_GRAMMAR_DETERMINERS = ("the", "this", "that", "me the", "me", "me this", "my")


def _command_verbs(tools: list[dict[str, Any]]) -> list[str]:
    """Generic verbs, and the name verbs of tools that need no free text."""
    out = list(_GENERIC_VERBS)
    for tool in tools:
        name_words = lexicon.identifier_words(str(tool.get("name", "")))
        properties = lexicon.tool_properties(tool)
        needs_text = any(
            lexicon.schema_type(properties.get(p, {})) == "string"
            and not lexicon.enum_values(properties.get(p, {}))
            for p in lexicon.tool_required(tool)
        )
        if name_words and not needs_text:
            out += lexicon.synonyms(name_words[0])
    return list(dict.fromkeys(out))


def _alternation(phrases: list[str]) -> str:
    return " | ".join(dict.fromkeys(phrases))


def command_grammar(
    tools: list[dict[str, Any]],
    known: Callable[[str], bool],
    complete: Callable[[str], bool],
) -> str | None:
    """A JSGF grammar of the short commands these tools take, or None when there are none.

    Only whole commands: an enum value said with optional verb, determiner and object
    ("show me the next picture", "go back", "the last one"), a numbered or ordinal object
    ("open image three", "go to picture number five", "show the second picture"), a
    tool's verb on its object ("describe this image"), and the small talk the lexicon
    knows. A phrase is offered only when ``complete`` (the brain) turns it into a whole
    tool call, so the grammar never hears a command the brain would have to ask about.
    Free text (prompts, queries, instructions) is the language model's job.
    """

    def ok(phrase: str) -> bool:
        return all(known(w) for w in lexicon.words(phrase))

    parts = _tool_parts(tools)
    objects = [o for o in parts["objects"] if " " not in o and o != "it" and ok(o)]
    # Verbs of tools that take free text ("paint", "search") lead into free text: the
    # language model hears those requests, the grammar never offers them.
    free_verbs = set(parts["free_verbs"])
    verbs = [v for v in _command_verbs(tools) if ok(v) and v not in free_verbs]
    sample_object = next((o for o in objects if o not in _GENERIC_OBJECTS), "one")
    candidates = [v for v in parts["values"] if ok(v) and v not in free_verbs]
    values = [v for v in candidates if complete(f"the {v} {sample_object}") or complete(v)]
    bodies: list[str] = []
    rules: list[str] = []
    if values:
        rules.append(f"<value> = {_alternation(values)};")
        bodies.append("[<verb>] [<det>] <value> [<object>]")
    numbered = bool(parts["numeric"]) and any(
        complete(f"{sample_object} {n}") for n in ("three", "twenty")
    )
    if numbered:
        numbers = [n for n in spoken_numbers(_GRAMMAR_NUMBERS)[1:] if ok(n)]
        ordinals = [n for n in spoken_ordinals(_GRAMMAR_ORDINALS) if ok(n)]
        rules.append(f"<number> = {_alternation(numbers)};")
        rules.append(f"<ordinal> = {_alternation(ordinals)};")
        units = [u for u in parts["units"] if ok(u) and u not in objects]
        unit = ""
        if units:
            rules.append(f"<unit> = {_alternation(units)};")
            unit = " [<unit>]"
        bodies.append(f"[<verb>] [<det>] <object> [number | to] <number>{unit}")
        bodies.append(f"[<verb>] [to] <number>{unit}")
        bodies.append("[<verb>] [<det>] <ordinal> <object>")
    # A tool's own verb on its object, when that alone is a whole call.
    named = [v for v in verbs if complete(f"{v} this {sample_object}")]
    if named:
        rules.append(f"<named> = {_alternation(named)};")
        bodies.append("<named> [<det>] <object>")
        verbs += named
    chat = [c for c in lexicon.CHAT_PHRASES if ok(c)]
    if chat:
        rules.append(f"<chat> = {_alternation(chat)};")
        bodies.append("<chat>")
    if not bodies:
        return None
    leads = [lead for lead in _GRAMMAR_LEADS if ok(lead)]
    determiners = [d for d in _GRAMMAR_DETERMINERS if ok(d)]
    rules += [
        f"<lead> = {_alternation(leads)};",
        f"<verb> = {_alternation(verbs)};",
        f"<det> = {_alternation(determiners)};",
        f"<object> = {_alternation(objects)};",
    ]
    body = " | ".join(f"( {b} )" for b in bodies)
    return (
        "\n".join(
            [
                "#JSGF V1.0;",
                "grammar commands;",
                f"public <command> = [<lead>] ( {body} ) [please];",
                *rules,
            ]
        )
        + "\n"
    )
