"""The assistant's tools: their JSON schemas (sent in the session config), strict argument
validation, and dispatch to gallery services, each `call_id` executed at most once.

The model only asks; this module decides. Every outcome, including a refusal or a bug,
is an output `{"ok": bool, "message": <a sentence the assistant can say>, ...}` that is
reported back to the model, never an exception.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction

from gallery import selectors as gallery_selectors
from gallery import services as gallery_services
from gallery.models import Image, Terminal
from voice import selectors
from voice.events import json_storable
from voice.models import ToolCall, VoiceSession

logger = logging.getLogger(__name__)

ToolOutput = dict[str, Any]

MAX_ARGUMENTS_CHARS = 8 * 1024
MAX_CALL_ID_CHARS = 100  # ToolCall.call_id
MAX_QUERY_CHARS = 200
MAX_STYLE_CHARS = 40  # Image.style
MAX_INSTRUCTION_CHARS = gallery_services.MAX_INSTRUCTION_LENGTH
MAX_POSITION = 100_000


class ToolArgumentsInvalid(Exception):
    """Arguments that do not match a tool's schema; the message is for the model."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ToolContext:
    user: Any
    terminal: Terminal


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    run: Callable[[ToolContext, dict[str, Any]], ToolOutput]


@dataclass(frozen=True)
class ToolCallResult:
    call_id: str
    name: str
    output: ToolOutput
    replayed: bool

    @property
    def output_text(self) -> str:
        """The output as the JSON string a `function_call_output` item carries."""
        return json.dumps(self.output, ensure_ascii=False)


# --- What each tool does ---------------------------------------------------------------


def _image_summary(terminal: Terminal, image: Image) -> dict[str, Any]:
    state = gallery_selectors.image_state(terminal=terminal, image=image)
    return {
        "id": image.pk,
        "title": image.title or image.prompt[:80],
        "prompt": image.prompt,
        "position": state["position"] if state and image.is_ready else None,
        "count": state["count"] if state else None,
        "status": image.status,
    }


def _navigate(context: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
    action = arguments["action"]
    if action == "goto" and "position" not in arguments:
        raise ToolArgumentsInvalid("“goto” needs a position, counting from 1.")
    if action == "search" and "query" not in arguments:
        raise ToolArgumentsInvalid("“search” needs a query saying what to look for.")
    if "position" in arguments and action != "goto":
        raise ToolArgumentsInvalid("A position is only used with the action “goto”.")
    if "query" in arguments and action != "search":
        raise ToolArgumentsInvalid("A query is only used with the action “search”.")
    service_action = {"goto": "position"}.get(action, action)
    terminal = gallery_services.terminal_navigate(
        terminal_id=context.terminal.pk,
        user=context.user,
        action=service_action,
        position=arguments.get("position"),
        query=arguments.get("query", ""),
    )
    image = terminal.current_image
    assert image is not None  # navigation always lands on an image or raises
    summary = _image_summary(terminal, image)
    return {
        "ok": True,
        "message": (
            f"The terminal now shows “{summary['title']}”, "
            f"picture {summary['position']} of {summary['count']}."
        ),
        "image": summary,
        "version": terminal.version,
    }


def _generate(context: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
    image = gallery_services.image_generate(
        owner=context.user,
        terminal=context.terminal,
        prompt=arguments["prompt"],
        style=arguments.get("style", ""),
    )
    return {
        "ok": True,
        "message": (
            f"I have started making “{image.prompt}”. It joins this terminal's pictures "
            "as soon as it is ready, usually within a minute."
        ),
        "image_id": image.pk,
        "status": image.status,
    }


def _describe(context: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
    terminal = context.terminal
    image: Image | None
    if "image_id" in arguments:
        image = selectors.terminal_image_get(terminal=terminal, image_id=arguments["image_id"])
        if image is None:
            return {
                "ok": False,
                "message": f"Picture {arguments['image_id']} is not on this terminal.",
                "error": "image_not_found",
            }
    else:
        image = terminal.current_image
        if image is None:
            return {
                "ok": False,
                "message": "The terminal is not showing a picture yet.",
                "error": "no_current_image",
            }
    summary = _image_summary(terminal, image)
    summary["description"] = image.description
    sentence = f"This is “{summary['title']}”, made from the prompt “{image.prompt}”."
    if image.description:
        sentence += f" {image.description}"
    if not image.is_ready:
        sentence += f" It is not finished yet ({image.get_status_display().lower()})."
    return {"ok": True, "message": sentence, "image": summary}


def _edit(context: ToolContext, arguments: dict[str, Any]) -> ToolOutput:
    current = context.terminal.current_image
    if current is None:
        return {
            "ok": False,
            "message": "The terminal is not showing a picture to edit yet.",
            "error": "no_current_image",
        }
    edited = gallery_services.image_edit(
        user=context.user, image=current, instruction=arguments["instruction"]
    )
    title = current.title or current.prompt[:80]
    return {
        "ok": True,
        "message": (
            f"I am making a new version of “{title}”: {arguments['instruction']}. "
            "It joins this terminal's pictures when it is ready."
        ),
        "image_id": edited.pk,
        "source_image_id": current.pk,
        "status": edited.status,
    }


def _string(description: str, *, max_length: int, min_length: int = 1) -> dict[str, Any]:
    return {
        "type": "string",
        "description": description,
        "minLength": min_length,
        "maxLength": max_length,
    }


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            name="navigate_gallery",
            description=(
                "Change the picture the terminal shows: the next, previous, first or last one, "
                "the one at a position (goto), or the newest one whose prompt matches a search."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "action": {
                        "type": "string",
                        "enum": ["next", "previous", "first", "last", "goto", "search"],
                        "description": "Where to go.",
                    },
                    "position": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_POSITION,
                        "description": "For goto: the picture's position on the terminal, from 1.",
                    },
                    "query": _string(
                        "For search: words from the picture's prompt.",
                        max_length=MAX_QUERY_CHARS,
                    ),
                },
                "required": ["action"],
                "additionalProperties": False,
            },
            run=_navigate,
        ),
        Tool(
            name="generate_image",
            description=(
                "Make a new picture from a description and add it to this terminal. "
                "It takes up to a minute to appear."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "prompt": _string(
                        "What the picture shows, in the user's words.",
                        max_length=gallery_services.MAX_PROMPT_LENGTH,
                    ),
                    "style": _string(
                        "An optional style, such as watercolour or pixel art.",
                        max_length=MAX_STYLE_CHARS,
                        min_length=0,
                    ),
                },
                "required": ["prompt"],
                "additionalProperties": False,
            },
            run=_generate,
        ),
        Tool(
            name="describe_image",
            description=(
                "Tell what a picture on this terminal shows: its title, prompt and "
                "description. Without image_id, the picture on screen now."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "image_id": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "A picture's id; leave out for the current picture.",
                    },
                },
                "required": [],
                "additionalProperties": False,
            },
            run=_describe,
        ),
        Tool(
            name="edit_image",
            description=(
                "Make a changed version of the picture on screen now, following an "
                "instruction such as 'make it snowy'. The original stays."
            ),
            parameters={
                "type": "object",
                "properties": {
                    "instruction": _string(
                        "How to change the picture.", max_length=MAX_INSTRUCTION_CHARS
                    ),
                },
                "required": ["instruction"],
                "additionalProperties": False,
            },
            run=_edit,
        ),
    )
}


def tool_definitions() -> list[dict[str, Any]]:
    """The tools as GA function tools, for the session config."""
    return [
        {
            "type": "function",
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
        for tool in TOOLS.values()
    ]


# --- Validation ------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key}")
        result[key] = value
    return result


def tool_arguments_validate(*, name: str, arguments: Any) -> dict[str, Any]:
    """Decode and check a call's arguments (a JSON string) against the tool's schema."""
    tool = TOOLS.get(name)
    if tool is None:
        raise ToolArgumentsInvalid(f"There is no tool called “{name[:60]}”.")
    if not isinstance(arguments, str):
        raise ToolArgumentsInvalid("The arguments must be a JSON object in a string.")
    if len(arguments) > MAX_ARGUMENTS_CHARS:
        raise ToolArgumentsInvalid("The arguments are too long.")
    try:
        decoded = json.loads(
            arguments or "{}", object_pairs_hook=_unique_keys, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError):
        raise ToolArgumentsInvalid("The arguments are not valid JSON.") from None
    _check(tool.parameters, decoded, "arguments")
    assert isinstance(decoded, dict)
    return decoded


def _check(schema: dict[str, Any], value: Any, where: str) -> None:
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise ToolArgumentsInvalid(f"The {where} must be an object.")
        properties: dict[str, Any] = schema.get("properties", {})
        extra = sorted(set(value) - set(properties))
        if extra and schema.get("additionalProperties") is False:
            raise ToolArgumentsInvalid(f"Unknown argument “{extra[0][:40]}”.")
        for required in schema.get("required", []):
            if required not in value:
                raise ToolArgumentsInvalid(f"The argument “{required}” is missing.")
        for key, item in value.items():
            _check(properties[key], item, f"argument “{key}”")
    elif kind == "string":
        if not isinstance(value, str):
            raise ToolArgumentsInvalid(f"The {where} must be text.")
        if not json_storable(value):
            raise ToolArgumentsInvalid(f"The {where} holds a character text cannot hold.")
        if len(value.strip()) < schema.get("minLength", 0):
            raise ToolArgumentsInvalid(f"The {where} is empty.")
        if len(value) > schema.get("maxLength", MAX_ARGUMENTS_CHARS):
            raise ToolArgumentsInvalid(
                f"The {where} is longer than {schema['maxLength']} characters."
            )
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ToolArgumentsInvalid(f"The {where} must be a whole number.")
        if "minimum" in schema and value < schema["minimum"]:
            raise ToolArgumentsInvalid(f"The {where} must be at least {schema['minimum']}.")
        if "maximum" in schema and value > schema["maximum"]:
            raise ToolArgumentsInvalid(f"The {where} must be at most {schema['maximum']}.")
    else:  # a schema in this module uses a type the checker does not know
        raise ToolArgumentsInvalid(f"The {where} cannot be checked.")
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(schema["enum"])
        raise ToolArgumentsInvalid(f"The {where} must be one of: {choices}.")


# --- Execution -------------------------------------------------------------------------


def tool_call_execute(
    *, session: VoiceSession, call_id: str, name: str, arguments: Any
) -> ToolCallResult:
    """Run the tool call `call_id` of `session` once; a repeat returns the stored output.

    The ToolCall row is inserted before the tool runs, in the same transaction, so a
    concurrent duplicate waits on the unique constraint and then reads the first output.
    """
    if not isinstance(call_id, str) or not call_id or len(call_id) > MAX_CALL_ID_CHARS:
        raise ValueError("call_id must be a non-empty string of at most 100 characters")
    stored = ToolCall.objects.filter(session=session, call_id=call_id).first()
    if stored is not None:
        return ToolCallResult(call_id, stored.name, stored.output, replayed=True)
    with transaction.atomic():
        try:
            with transaction.atomic():
                call = ToolCall.objects.create(
                    session=session,
                    call_id=call_id,
                    name=str(name)[:60],
                    arguments=_arguments_record(arguments),
                    status=ToolCall.Status.FAILED,
                )
        except IntegrityError:
            stored = ToolCall.objects.get(session=session, call_id=call_id)
            return ToolCallResult(call_id, stored.name, stored.output, replayed=True)
        output = _run(session=session, name=str(name), arguments=arguments)
        call.output = output
        call.status = ToolCall.Status.SUCCEEDED if output["ok"] else ToolCall.Status.FAILED
        call.save(update_fields=["output", "status"])
    return ToolCallResult(call_id, call.name, output, replayed=False)


def _arguments_record(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, str) and len(arguments) <= MAX_ARGUMENTS_CHARS:
        try:
            decoded = json.loads(arguments or "{}")
        except ValueError:
            decoded = None
        if isinstance(decoded, dict) and json_storable(decoded):
            return decoded
    # The text as sent: the event it came in was stored, so it can be (voice.events).
    return {"unparsed": str(arguments)[:1000]}


def _run(*, session: VoiceSession, name: str, arguments: Any) -> ToolOutput:
    try:
        parsed = tool_arguments_validate(name=name, arguments=arguments)
    except ToolArgumentsInvalid as invalid:
        return {
            "ok": False,
            "message": f"I could not do that: {invalid.message}",
            "error": "invalid_arguments",
        }
    user = get_user_model().objects.filter(pk=session.user_id).first()
    terminal = Terminal.objects.select_related("current_image").get(pk=session.terminal_id)
    if user is None or not gallery_selectors.terminal_can_control(user=user, terminal=terminal):
        return {
            "ok": False,
            "message": "This user may no longer control the terminal.",
            "error": "forbidden",
        }
    try:
        # A savepoint of its own, so a failed tool leaves the ToolCall row writable.
        with transaction.atomic():
            return TOOLS[name].run(ToolContext(user=user, terminal=terminal), parsed)
    except ToolArgumentsInvalid as invalid:
        return {
            "ok": False,
            "message": f"I could not do that: {invalid.message}",
            "error": "invalid_arguments",
        }
    except gallery_services.GalleryError as error:
        return {"ok": False, "message": error.message, "error": error.code}
    except Exception:
        logger.exception("Tool %s failed in voice session %s", name, session.pk)
        return {
            "ok": False,
            "message": "Something went wrong on the server while doing that. Try again later.",
            "error": "server_error",
        }
