"""A JSGF grammar for the recogniser, built from the session's tool schemas.

Two shapes of utterance cover tool calls:
- a command: ``[verb] [the] [value | number] [object] [to number unit]`` — "show me the
  next picture", "go back", "open image three", "set the temperature to twenty one degrees";
- a free-text request: ``verb word+`` for tools with free string parameters — "paint a
  red fox in the snow", "search for foxes", "play yellow submarine".
Greetings and small talk form a third shape so the brain can answer them. Every word
comes from the tools (name, enum values, parameter names, descriptions), the lexicon's
general command English, or its free-text vocabulary; words the pronouncing dictionary
lacks are dropped, because the decoder refuses a grammar with unknown words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from voice.engine import lexicon
from voice.engine.numbers import spoken_numbers, spoken_ordinals

_GENERIC_VERBS = (
    "go",
    "go to",
    "show",
    "show me",
    "open",
    "display",
    "take me to",
    "bring up",
    "set",
    "change",
    "turn",
    "tell me about",
    "what is",
    "what's",
    "give me",
)
_NUMBER_LEADS = ("to", "at", "number", "to number", "to the", "at the")
_GENERIC_OBJECTS = ("one", "ones", "it", "this", "that")


def _spoken(text: str) -> str:
    return " ".join(lexicon.words(text))


class GrammarBuilder:
    """Builds the JSGF text; ``known`` says whether the dictionary has a word."""

    def __init__(self, known: Callable[[str], bool]) -> None:
        self._known = known

    def _phrases(self, phrases: Iterable[str]) -> list[str]:
        out: list[str] = []
        for phrase in phrases:
            spoken = _spoken(phrase)
            if spoken and all(self._known(w) for w in spoken.split()) and spoken not in out:
                out.append(spoken)
        return out

    @staticmethod
    def _rule(name: str, phrases: list[str]) -> str:
        return f"<{name}> = {' | '.join(phrases)};"

    def build(self, tools: list[dict[str, Any]]) -> str:
        verbs: list[str] = list(_GENERIC_VERBS)
        objects: list[str] = list(_GENERIC_OBJECTS)
        values: list[str] = []
        units: list[str] = []
        free_verbs: list[str] = []
        tool_words: list[str] = []
        has_numbers = False
        for tool in tools:
            name_words = lexicon.identifier_words(str(tool.get("name", "")))
            description = lexicon.content_words(str(tool.get("description", "")))
            tool_words += name_words + description
            if name_words:
                verbs += lexicon.synonyms(name_words[0])
                for word in name_words[1:]:
                    objects += lexicon.synonyms(word)
            has_free_text = False
            tool_values: list[str] = []
            for pname, schema in lexicon.tool_properties(tool).items():
                kind = lexicon.schema_type(schema)
                param_words = lexicon.identifier_words(pname)
                tool_words += param_words
                for value in lexicon.enum_values(schema):
                    for word in (value, " ".join(lexicon.identifier_words(value))):
                        tool_values += lexicon.synonyms(word)
                if kind in ("integer", "number") and not lexicon.enum_values(schema):
                    has_numbers = True
                    units += param_words
                    units += lexicon.content_words(str(schema.get("description", "")))
                if kind == "string" and not lexicon.enum_values(schema):
                    has_free_text = True
            values += tool_values
            if has_free_text and name_words:
                free_verbs += lexicon.synonyms(name_words[0])
                free_verbs += tool_values
        verbs = self._phrases(verbs)
        values = self._phrases(values)
        objects = self._phrases(objects)
        units = self._phrases(units)
        free_verbs = self._phrases(free_verbs)
        numbers = self._phrases([*spoken_numbers(100), *spoken_ordinals(31)])
        free_words = self._phrases(
            [
                *lexicon.FREE_TEXT_WORDS,
                *tool_words,
                *(w for p in values + objects for w in p.split()),
            ]
        )

        rules = [
            "#JSGF V1.0;",
            "grammar engine;",
        ]
        body = ["<chat>"]
        command_slots = []
        if verbs:
            rules.append(self._rule("verb", verbs))
            command_slots.append("[<verb>]")
        rules.append(self._rule("det", self._phrases(lexicon.DETERMINERS)))
        command_slots.append("[<det>]")
        choice = [r for r, ok in (("<value>", values), ("<number>", has_numbers)) if ok]
        if values:
            rules.append(self._rule("value", values))
        if has_numbers:
            rules.append(self._rule("number", numbers))
            unit = " [<unit>]" if units else ""
            if units:
                rules.append(self._rule("unit", units))
            leads = self._phrases(_NUMBER_LEADS)
            rules.append(f"<numphrase> = [{' | '.join(leads)}] <number>{unit};")
        if choice:
            command_slots.append(f"[{' | '.join(choice)}]")
        if objects:
            rules.append(self._rule("object", objects))
            command_slots.append("[<object>]")
        if has_numbers:
            command_slots.append("[<numphrase>]")
        rules.append(f"<command> = {' '.join(command_slots)};")
        body.append("<command>")
        if free_verbs and free_words:
            rules.append(self._rule("freeverb", free_verbs))
            rules.append(self._rule("freeword", free_words))
            rules.append("<free> = <freeverb> <freeword>+;")
            body.append("<free>")
        rules.append(self._rule("lead", self._phrases(lexicon.LEAD_PHRASES)))
        rules.append(self._rule("chat", self._phrases(lexicon.CHAT_PHRASES)))
        polite = " [please]" if self._known("please") else ""
        rules.append(f"public <utterance> = [<lead>] ({' | '.join(body)}){polite};")
        return "\n".join(rules) + "\n"
