"""Realtime GA session configuration: validation, defaults and updates.

OpenAI rejects a whole request for one unknown or mistyped field and names it in
`param` (`session.audio.input.foo`); the engine does the same so a client that works
here works there. `session_build` returns the complete session, every default filled,
as OpenAI echoes it in `client_secrets`, `session.created` and `session.updated`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from voice.engine.errors import EngineError
from voice.engine.events import new_id

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Use the declared tools when the user asks for "
    "something they can do, and answer briefly."
)
EXPIRES_MIN_SECONDS = 10
EXPIRES_MAX_SECONDS = 7200
EXPIRES_DEFAULT_SECONDS = 600
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# JSON kept as the client wrote it (tool schemas, tracing metadata, prompt variables) is
# later copied, compared and serialised by recursive code; bounding its nesting keeps
# that far from Python's recursion limit. Real tool schemas nest a few levels.
MAX_NESTING = 64
# OpenAI's limits on a response's metadata.
_METADATA_PAIRS = 16
_METADATA_KEY_CHARS = 64
_METADATA_VALUE_CHARS = 512
# Silence that ends a turn for each semantic_vad eagerness: eager turns end sooner.
_EAGERNESS_SILENCE_MS = {"low": 1200, "medium": 800, "high": 400, "auto": 800}


def default_turn_detection() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    }


def default_session() -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": 24000}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": new_id("sess"),
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": DEFAULT_INSTRUCTIONS,
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": default_turn_detection(),
            },
            "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": 0,
    }


# --- primitive checks -------------------------------------------------------------------
def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _invalid_type(path: str, expected: str, value: Any) -> EngineError:
    return EngineError(
        f"Invalid type for '{path}': expected {expected}, but got {_type_name(value)} instead.",
        code="invalid_type",
        param=path,
    )


def invalid_value(path: str, message: str) -> EngineError:
    return EngineError(f"Invalid value for '{path}': {message}", code="invalid_value", param=path)


def missing(path: str) -> EngineError:
    return EngineError(
        f"Missing required parameter: '{path}'.", code="missing_required_parameter", param=path
    )


def check_object(value: Any, path: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    """An object whose keys are all known; the first unknown key is named in the error."""
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object", value)
    for key in value:
        if key not in allowed:
            name = f"{path}.{key}" if path else str(key)
            raise EngineError(f"Unknown parameter: '{name}'.", code="unknown_parameter", param=name)
    return value


def check_array(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _invalid_type(path, "an array", value)
    return value


def check_string(value: Any, path: str, *, max_length: int = 32_768) -> str:
    if not isinstance(value, str):
        raise _invalid_type(path, "a string", value)
    if len(value) > max_length:
        raise invalid_value(path, f"at most {max_length} characters are allowed.")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid_type(path, "a boolean", value)
    return value


def check_int(value: Any, path: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(path, "an integer", value)
    if not low <= value <= high:
        raise invalid_value(path, f"expected a value between {low} and {high}, got {value}.")
    return value


def _number(value: Any, path: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type(path, "a number", value)
    if not low <= value <= high:
        raise invalid_value(path, f"expected a value between {low} and {high}, got {value}.")
    return float(value)


def check_nesting(value: Any, path: str) -> Any:
    """`value`, refused when its objects and arrays nest deeper than MAX_NESTING."""
    pending = [(value, 1)]
    while pending:
        node, depth = pending.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_NESTING:
            raise invalid_value(
                path, f"objects and arrays may nest at most {MAX_NESTING} levels deep."
            )
        pending.extend((child, depth + 1) for child in children)
    return value


def check_choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise _invalid_type(path, "a string", value)
    if value not in choices:
        listed = ", ".join(f"'{c}'" for c in choices)
        raise invalid_value(path, f"'{value}' is not supported; use one of {listed}.")
    return value


# --- nested configuration ----------------------------------------------------------------
def _format(value: Any, path: str) -> dict[str, Any]:
    data = check_object(value, path, ("type", "rate"))
    kind = check_choice(
        data.get("type", "audio/pcm"), f"{path}.type", ("audio/pcm", "audio/pcmu", "audio/pcma")
    )
    if kind == "audio/pcm":
        if "rate" in data and data["rate"] != 24000:
            raise invalid_value(f"{path}.rate", "audio/pcm is 24000 Hz.")
        return {"type": kind, "rate": 24000}
    if "rate" in data:
        raise EngineError(
            f"Unknown parameter: '{path}.rate'.", code="unknown_parameter", param=f"{path}.rate"
        )
    return {"type": kind}


def _turn_detection(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object or null", value)
    if "type" not in value:
        raise missing(f"{path}.type")
    kind = check_choice(value["type"], f"{path}.type", ("server_vad", "semantic_vad"))
    if kind == "semantic_vad":
        data = check_object(
            value, path, ("type", "eagerness", "create_response", "interrupt_response")
        )
        eagerness = check_choice(
            data.get("eagerness", "auto"), f"{path}.eagerness", tuple(_EAGERNESS_SILENCE_MS)
        )
        return {
            "type": "semantic_vad",
            "eagerness": eagerness,
            "create_response": _bool(data.get("create_response", True), f"{path}.create_response"),
            "interrupt_response": _bool(
                data.get("interrupt_response", True), f"{path}.interrupt_response"
            ),
        }
    data = check_object(
        value,
        path,
        (
            "type",
            "threshold",
            "prefix_padding_ms",
            "silence_duration_ms",
            "idle_timeout_ms",
            "create_response",
            "interrupt_response",
        ),
    )
    result = default_turn_detection()
    if "threshold" in data:
        result["threshold"] = _number(data["threshold"], f"{path}.threshold", 0.0, 1.0)
    if "prefix_padding_ms" in data:
        result["prefix_padding_ms"] = check_int(
            data["prefix_padding_ms"], f"{path}.prefix_padding_ms", 0, 10_000
        )
    if "silence_duration_ms" in data:
        result["silence_duration_ms"] = check_int(
            data["silence_duration_ms"], f"{path}.silence_duration_ms", 0, 10_000
        )
    if data.get("idle_timeout_ms") is not None:
        result["idle_timeout_ms"] = check_int(
            data["idle_timeout_ms"], f"{path}.idle_timeout_ms", 5_000, 30_000
        )
    for flag in ("create_response", "interrupt_response"):
        if flag in data:
            result[flag] = _bool(data[flag], f"{path}.{flag}")
    return result


def vad_parameters(turn_detection: dict[str, Any]) -> dict[str, Any]:
    """The voice activity detector's settings for a session's turn detection."""
    if turn_detection["type"] == "semantic_vad":
        silence = _EAGERNESS_SILENCE_MS[turn_detection["eagerness"]]
        return {"threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": silence}
    return {
        "threshold": turn_detection["threshold"],
        "prefix_padding_ms": turn_detection["prefix_padding_ms"],
        "silence_duration_ms": turn_detection["silence_duration_ms"],
    }


def _transcription(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    data = check_object(value, path, ("model", "language", "prompt"))
    result: dict[str, Any] = {"model": "whisper-1", "language": None, "prompt": None}
    for key in ("model", "language", "prompt"):
        if data.get(key) is not None:
            result[key] = check_string(data[key], f"{path}.{key}")
    return result


def _noise_reduction(value: Any, path: str) -> dict[str, Any] | None:
    if value is None:
        return None
    data = check_object(value, path, ("type",))
    return {"type": check_choice(data.get("type"), f"{path}.type", ("near_field", "far_field"))}


def _audio_input(value: Any, path: str, current: dict[str, Any]) -> dict[str, Any]:
    data = check_object(
        value, path, ("format", "transcription", "noise_reduction", "turn_detection")
    )
    result = copy.deepcopy(current)
    if "format" in data:
        result["format"] = _format(data["format"], f"{path}.format")
    if "transcription" in data:
        result["transcription"] = _transcription(data["transcription"], f"{path}.transcription")
    if "noise_reduction" in data:
        result["noise_reduction"] = _noise_reduction(
            data["noise_reduction"], f"{path}.noise_reduction"
        )
    if "turn_detection" in data:
        result["turn_detection"] = _turn_detection(data["turn_detection"], f"{path}.turn_detection")
    return result


def check_voice(value: Any, path: str) -> str:
    """One of OpenAI's voices, by name or as {"id": name}."""
    if isinstance(value, dict):
        value = check_string(check_object(value, path, ("id",)).get("id"), f"{path}.id")
    return check_choice(value, path, VOICES)


def _audio_output(value: Any, path: str, current: dict[str, Any]) -> dict[str, Any]:
    data = check_object(value, path, ("format", "voice", "speed"))
    result = copy.deepcopy(current)
    if "format" in data:
        result["format"] = _format(data["format"], f"{path}.format")
    if "voice" in data:
        result["voice"] = check_voice(data["voice"], f"{path}.voice")
    if "speed" in data:
        result["speed"] = _number(data["speed"], f"{path}.speed", 0.25, 1.5)
    return result


def _audio(value: Any, path: str, current: dict[str, Any]) -> dict[str, Any]:
    data = check_object(value, path, ("input", "output"))
    result = copy.deepcopy(current)
    if "input" in data:
        result["input"] = _audio_input(data["input"], f"{path}.input", current["input"])
    if "output" in data:
        result["output"] = _audio_output(data["output"], f"{path}.output", current["output"])
    return result


def check_tools(value: Any, path: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise _invalid_type(path, "an array", value)
    tools: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, raw in enumerate(value):
        where = f"{path}[{index}]"
        data = check_object(raw, where, ("type", "name", "description", "parameters"))
        if data.get("type", "function") != "function":
            raise invalid_value(
                f"{where}.type", "this engine supports only tools of type 'function'."
            )
        if "name" not in data:
            raise missing(f"{where}.name")
        name = check_string(data["name"], f"{where}.name")
        if not _TOOL_NAME.match(name):
            raise invalid_value(
                f"{where}.name", "use 1-64 letters, digits, underscores or hyphens."
            )
        if name in names:
            raise invalid_value(f"{where}.name", f"the tool name '{name}' is declared twice.")
        names.add(name)
        parameters = data.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(parameters, dict):
            raise _invalid_type(f"{where}.parameters", "an object (a JSON Schema)", parameters)
        check_nesting(parameters, f"{where}.parameters")
        tools.append(
            {
                "type": "function",
                "name": name,
                "description": check_string(data.get("description", ""), f"{where}.description"),
                "parameters": parameters,
            }
        )
    return tools


def check_tool_choice(value: Any, path: str) -> str | dict[str, Any]:
    if isinstance(value, str):
        return check_choice(value, path, ("none", "auto", "required"))
    data = check_object(value, path, ("type", "name"))
    check_choice(data.get("type"), f"{path}.type", ("function",))
    if "name" not in data:
        raise missing(f"{path}.name")
    return {"type": "function", "name": check_string(data["name"], f"{path}.name")}


def check_modalities(value: Any, path: str) -> list[str]:
    if not isinstance(value, list):
        raise _invalid_type(path, "an array", value)
    if len(value) != 1:
        raise invalid_value(path, "use either ['audio'] or ['text'].")
    return [check_choice(value[0], f"{path}[0]", ("audio", "text"))]


def check_max_output_tokens(value: Any, path: str) -> int | str:
    if value == "inf":
        return "inf"
    return check_int(value, path, 1, 4096)


def _free_object(value: Any, path: str) -> dict[str, Any]:
    """An object of the client's own keys (metadata), passed through as given."""
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object", value)
    return copy.deepcopy(check_nesting(value, path))


def check_metadata(value: Any, path: str) -> dict[str, str] | None:
    """A response's metadata as OpenAI takes it: up to 16 short string pairs, or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(path, "an object of strings", value)
    if len(value) > _METADATA_PAIRS:
        raise invalid_value(path, f"at most {_METADATA_PAIRS} key-value pairs are allowed.")
    for key, item in value.items():
        check_string(key, path, max_length=_METADATA_KEY_CHARS)
        check_string(item, f"{path}.{key}", max_length=_METADATA_VALUE_CHARS)
    return dict(value)


def _tracing(value: Any, path: str) -> Any:
    if value is None or value == "auto":
        return value
    data = check_object(value, path, ("workflow_name", "group_id", "metadata"))
    return {
        "workflow_name": check_string(data.get("workflow_name", ""), f"{path}.workflow_name"),
        "group_id": check_string(data.get("group_id", ""), f"{path}.group_id"),
        "metadata": _free_object(data.get("metadata", {}), f"{path}.metadata"),
    }


def _truncation(value: Any, path: str) -> Any:
    if isinstance(value, str):
        return check_choice(value, path, ("auto", "disabled"))
    data = check_object(value, path, ("type", "retention_ratio"))
    check_choice(data.get("type"), f"{path}.type", ("retention_ratio",))
    return {
        "type": "retention_ratio",
        "retention_ratio": _number(
            data.get("retention_ratio"), f"{path}.retention_ratio", 0.0, 1.0
        ),
    }


def _include(value: Any, path: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid_type(path, "an array", value)
    options = ("item.input_audio_transcription.logprobs",)
    return [check_choice(v, f"{path}[{i}]", options) for i, v in enumerate(value)]


def _prompt(value: Any, path: str) -> Any:
    if value is None:
        return None
    data = check_object(value, path, ("id", "version", "variables"))
    if "id" not in data:
        raise missing(f"{path}.id")
    check_string(data["id"], f"{path}.id")
    return copy.deepcopy(check_nesting(data, path))


_SESSION_FIELDS: dict[str, Callable[[Any, str], Any]] = {
    "model": lambda v, p: check_string(v, p, max_length=200),
    "instructions": check_string,
    "output_modalities": check_modalities,
    "tools": check_tools,
    "tool_choice": check_tool_choice,
    "max_output_tokens": check_max_output_tokens,
    "tracing": _tracing,
    "truncation": _truncation,
    "include": _include,
    "prompt": _prompt,
    "parallel_tool_calls": _bool,
}


def session_build(
    *, data: Any, current: dict[str, Any] | None = None, path: str = "session"
) -> dict[str, Any]:
    """Validate a session config (client_secrets or session.update) onto `current`.

    Raises EngineError naming the first offending field. Objects under `audio` merge
    field by field; every other field replaces the current value.
    """
    allowed = ("type", "audio", *_SESSION_FIELDS)
    config = check_object(data, path, allowed)
    if "type" not in config:
        raise missing(f"{path}.type")
    if config["type"] != "realtime":
        check_string(config["type"], f"{path}.type")
        raise invalid_value(f"{path}.type", "this engine serves only sessions of type 'realtime'.")
    result = copy.deepcopy(current) if current is not None else default_session()
    for key, check in _SESSION_FIELDS.items():
        if key in config:
            result[key] = check(config[key], f"{path}.{key}")
    if "audio" in config:
        result["audio"] = _audio(config["audio"], f"{path}.audio", result["audio"])
    return result


def client_secret_request(*, data: Any) -> tuple[dict[str, Any], int]:
    """The session and lifetime (seconds) asked for by a client_secrets request body."""
    body = check_object(data, "", ("expires_after", "session"))
    seconds = EXPIRES_DEFAULT_SECONDS
    if "expires_after" in body:
        expires = check_object(body["expires_after"], "expires_after", ("anchor", "seconds"))
        check_choice(expires.get("anchor", "created_at"), "expires_after.anchor", ("created_at",))
        if "seconds" in expires:
            seconds = check_int(
                expires["seconds"],
                "expires_after.seconds",
                EXPIRES_MIN_SECONDS,
                EXPIRES_MAX_SECONDS,
            )
    session = session_build(data=body.get("session", {"type": "realtime"}))
    return session, seconds
