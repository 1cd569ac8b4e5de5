"""Builders for the server events of the Realtime protocol, and the ids they carry.

Every event gets a fresh `event_id`; items, responses and calls get OpenAI-style
prefixed ids so clients that log or route by prefix see familiar shapes.
"""

from __future__ import annotations

import secrets
from typing import Any

from voice.engine.errors import EngineError

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    """A prefixed random id such as `item_3kD9...` (URL- and log-safe)."""
    return f"{prefix}_{secrets.token_hex(10)}"


def event(type_: str, **fields: Any) -> Event:
    return {"type": type_, "event_id": new_id("event"), **fields}


def error(error: EngineError, *, event_id: str | None) -> Event:
    """The `error` event for a refused client event (`event_id` names it)."""
    return event("error", error={**error.as_dict(), "event_id": event_id})


def user_audio_item(item_id: str, transcript: str | None) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": "completed",
        "role": "user",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def assistant_item(item_id: str, *, modality: str, text: str, status: str) -> dict[str, Any]:
    part: dict[str, Any] = (
        {"type": "output_audio", "transcript": text}
        if modality == "audio"
        else {"type": "output_text", "text": text}
    )
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def content_part(*, modality: str, text: str) -> dict[str, Any]:
    if modality == "audio":
        return {"type": "audio", "transcript": text}
    return {"type": "text", "text": text}


def function_call_item(
    item_id: str, *, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def usage(
    *, input_text: int, input_audio: int, output_text: int, output_audio: int
) -> dict[str, Any]:
    """Token counts in OpenAI's shape; the engine counts words, a plausible stand-in."""
    inputs = input_text + input_audio
    outputs = output_text + output_audio
    return {
        "total_tokens": inputs + outputs,
        "input_tokens": inputs,
        "output_tokens": outputs,
        "input_token_details": {
            "text_tokens": input_text,
            "audio_tokens": input_audio,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0},
        },
        "output_token_details": {"text_tokens": output_text, "audio_tokens": output_audio},
    }
