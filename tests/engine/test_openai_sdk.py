"""The official `openai` SDK against the engine served by a live Daphne."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from tests.engine.server import NAVIGATE, EngineServer


def _client(server: EngineServer, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.engine_url, api_key=key or server.api_key, max_retries=0, timeout=10
    )


def test_client_secret_created_with_full_session(engine_server: EngineServer) -> None:
    before = int(time.time())
    session_config: Any = {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Drive the gallery.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "turn_detection": {
                    "type": "server_vad",
                    "silence_duration_ms": 400,
                    "create_response": True,
                }
            },
            "output": {"voice": "verse"},
        },
        "tools": [NAVIGATE],
        "tool_choice": "auto",
    }
    secret = _client(engine_server).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": 60}, session=session_config
    )
    assert secret.value.startswith("ek_")
    assert before + 59 <= secret.expires_at <= before + 62
    session: Any = secret.session
    assert session.type == "realtime"
    assert session.object == "realtime.session"
    assert session.id.startswith("sess_")
    assert session.instructions == "Drive the gallery."
    assert session.tools[0].name == "navigate_gallery"
    detection = session.audio.input.turn_detection
    # Given fields kept, the rest filled with defaults.
    assert detection.silence_duration_ms == 400
    assert detection.prefix_padding_ms == 300
    assert detection.interrupt_response is True
    assert session.audio.output.voice == "verse"
    assert session.max_output_tokens == "inf"


def test_defaults_when_only_the_type_is_given(engine_server: EngineServer) -> None:
    before = int(time.time())
    secret = _client(engine_server).realtime.client_secrets.create(session={"type": "realtime"})
    assert before + 599 <= secret.expires_at <= before + 602
    session: Any = secret.session
    assert session.output_modalities == ["audio"]
    assert session.audio.input.turn_detection.type == "server_vad"
    assert session.tools == []


def test_wrong_server_key_is_401(engine_server: EngineServer) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        _client(engine_server, "sk-not-the-key").realtime.client_secrets.create(
            session={"type": "realtime"}
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"


def test_ephemeral_key_cannot_mint_keys(engine_server: EngineServer) -> None:
    secret = _client(engine_server).realtime.client_secrets.create(session={"type": "realtime"})
    with pytest.raises(openai.AuthenticationError):
        _client(engine_server, secret.value).realtime.client_secrets.create(
            session={"type": "realtime"}
        )


@pytest.mark.parametrize(
    ("session", "param"),
    [
        ({"type": "realtime", "modalities": ["audio"]}, "session.modalities"),
        (
            {"type": "realtime", "audio": {"input": {"foo": 1}}},
            "session.audio.input.foo",
        ),
        (
            {
                "type": "realtime",
                "audio": {"input": {"turn_detection": {"type": "server_vad", "speed": 2}}},
            },
            "session.audio.input.turn_detection.speed",
        ),
        ({"type": "realtime", "tools": [{**NAVIGATE, "strict": True}]}, "session.tools[0].strict"),
    ],
)
def test_unknown_parameter_names_the_field(
    engine_server: EngineServer, session: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(engine_server).realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
    assert caught.value.code == "unknown_parameter"
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"type": "realtime", "instructions": 42}, "invalid_type", "session.instructions"),
        (
            {"type": "realtime", "audio": {"output": {"speed": "fast"}}},
            "invalid_type",
            "session.audio.output.speed",
        ),
        (
            {"type": "realtime", "output_modalities": ["audio", "text"]},
            "invalid_value",
            "session.output_modalities",
        ),
        (
            {"type": "realtime", "audio": {"output": {"voice": "robot"}}},
            "invalid_value",
            "session.audio.output.voice",
        ),
        ({"model": "gpt-realtime"}, "missing_required_parameter", "session.type"),
    ],
)
def test_bad_types_and_values(
    engine_server: EngineServer, session: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(engine_server).realtime.client_secrets.create(session=session)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.param == param


@pytest.mark.parametrize("seconds", [9, 7201])
def test_expires_after_bounds(engine_server: EngineServer, seconds: int) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _client(engine_server).realtime.client_secrets.create(
            expires_after={"anchor": "created_at", "seconds": seconds},
            session={"type": "realtime"},
        )
    assert caught.value.code == "invalid_value"
    assert caught.value.param == "expires_after.seconds"


@pytest.mark.parametrize("seconds", [10, 7200])
def test_expires_after_limits_are_accepted(engine_server: EngineServer, seconds: int) -> None:
    before = int(time.time())
    secret = _client(engine_server).realtime.client_secrets.create(
        expires_after={"anchor": "created_at", "seconds": seconds}, session={"type": "realtime"}
    )
    assert before + seconds - 1 <= secret.expires_at <= before + seconds + 2
