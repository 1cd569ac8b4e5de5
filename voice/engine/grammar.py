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
