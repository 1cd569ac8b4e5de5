"""POST /api/realtime/: who gets a voice key, in what shape, and what a failure looks like."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from django.middleware.csrf import _get_new_csrf_string
from django.test import Client
from django.urls import reverse

from gallery.models import TerminalMembership
from tests.voice.conftest import ENGINE_TEST_KEY, OPENAI_TEST_KEY, RealtimeStub, openai_error
from voice.models import VoiceEvent, VoiceSession

URL = "/api/realtime/"


def csrf_client(user: Any | None = None) -> tuple[Client, dict[str, str]]:
    """A client that enforces CSRF like a browser, and the header its page would send."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    token = _get_new_csrf_string()
    client.cookies["csrftoken"] = token
    return client, {"HTTP_X_CSRFTOKEN": token}


def post(
    client: Client, body: Any, headers: dict[str, str], content_type: str = "application/json"
) -> Any:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    extra: dict[str, Any] = dict(headers)
    return client.post(URL, data=data, content_type=content_type, **extra)


def error_code(response: Any) -> str:
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    return body["error"]["code"]


@pytest.fixture
def lobby(make_terminal: Callable[..., Any]) -> Any:
    return make_terminal(slug="lobby", name="Main Lobby")


def test_the_url_is_named() -> None:
    assert reverse("voice:token") == URL


def test_anonymous_gets_a_json_401_not_a_login_redirect(
    db: None, lobby: Any, openai_upstream: RealtimeStub
) -> None:
    client, headers = csrf_client()
    response = post(client, {"terminal": "lobby"}, headers)
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"
    assert openai_upstream.requests == []


def test_missing_csrf_token_is_a_json_403(
    owner: Any, lobby: Any, openai_upstream: RealtimeStub
) -> None:
    client, _ = csrf_client(owner)
    response = post(client, {"terminal": "lobby"}, {})
    assert response.status_code == 403
    assert error_code(response) == "csrf_failed"
    assert not VoiceSession.objects.exists()
    assert openai_upstream.requests == []


def test_only_post(owner: Any, lobby: Any) -> None:
    client, _ = csrf_client(owner)
    assert client.get(URL).status_code == 405


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"terminal=lobby", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
        (b'["lobby"]', "application/json"),
        (b"{}", "application/json"),
        (b'{"terminal": 7}', "application/json"),
        (b'{"terminal": ""}', "application/json"),
        (b'{"terminal": "lobby", "model": "gpt-4"}', "application/json"),
        (json.dumps({"terminal": "lobby", "pad": "x" * 5000}).encode(), "application/json"),
    ],
)
def test_malformed_requests_are_400_json(
    owner: Any, lobby: Any, openai_upstream: RealtimeStub, body: bytes, content_type: str
) -> None:
    client, headers = csrf_client(owner)
    response = post(client, body, headers, content_type=content_type)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert not VoiceSession.objects.exists()
    assert openai_upstream.requests == []


def test_a_viewer_may_not_start_voice(
    lobby: Any,
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
    openai_upstream: RealtimeStub,
) -> None:
    viewer = make_user("viewer")
    add_member(lobby, viewer, TerminalMembership.Role.VIEWER)
    client, headers = csrf_client(viewer)
    response = post(client, {"terminal": "lobby"}, headers)
    assert response.status_code == 403
    assert error_code(response) == "forbidden"
    assert not VoiceSession.objects.exists()
    assert openai_upstream.requests == []


def test_unknown_and_unwatchable_terminals_are_404(
    make_terminal: Callable[..., Any], make_user: Callable[..., Any], openai_upstream: RealtimeStub
) -> None:
    make_terminal(slug="private", is_public=False)
    stranger = make_user("stranger")
    client, headers = csrf_client(stranger)
    for slug in ("nowhere", "private"):
        response = post(client, {"terminal": slug}, headers)
        assert response.status_code == 404
        assert error_code(response) == "terminal_not_found"
    assert openai_upstream.requests == []


def test_a_controller_gets_a_key_and_a_session(
    owner: Any, lobby: Any, openai_upstream: RealtimeStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, headers = csrf_client(owner)

    response = post(client, {"terminal": "lobby"}, headers)

    assert response.status_code == 200, response.content
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    session = VoiceSession.objects.get()
    assert session.token_expires_at is not None
    assert body == {
        "value": "ek_test_0123456789abcdef",
        "expires_at": int(session.token_expires_at.timestamp()),
        "calls_url": f"{openai_upstream.base_url}/realtime/calls",
        "model": "gpt-realtime",
        "voice": "verse",
        "session_id": session.pk,
    }
    assert session.user == owner and session.terminal == lobby
    assert session.upstream == "openai"
    assert (session.model, session.voice) == ("gpt-realtime", "verse")
    assert session.status == VoiceSession.Status.MINTED
    stored = json.dumps(list(VoiceSession.objects.values()), default=str)
    everything = (
        response.content.decode() + json.dumps(dict(response.headers)) + caplog.text + stored
    )
    assert OPENAI_TEST_KEY not in everything


def test_the_minted_session_is_the_configured_ga_session(
    owner: Any, lobby: Any, openai_upstream: RealtimeStub, settings: Any
) -> None:
    settings.REALTIME_MODEL = "gpt-realtime-mini"
    settings.REALTIME_VOICE = "marin"
    settings.REALTIME_TOKEN_TTL_SECONDS = 60
    client, headers = csrf_client(owner)
    assert post(client, {"terminal": "lobby"}, headers).status_code == 200

    [request] = openai_upstream.requests
    assert request.body["expires_after"] == {"anchor": "created_at", "seconds": 60}
    session = request.body["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime-mini"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["output"] == {"voice": "marin"}
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert "Main Lobby" in session["instructions"]
    assert lobby.current_image.prompt in session["instructions"]
    tools = {tool["name"]: tool for tool in session["tools"]}
    assert set(tools) == {"navigate_gallery", "generate_image", "describe_image", "edit_image"}
    for tool in tools.values():
        assert tool["type"] == "function"
        assert tool["parameters"]["additionalProperties"] is False
    assert tools["navigate_gallery"]["parameters"]["properties"]["action"]["enum"] == [
        "next",
        "previous",
        "first",
        "last",
        "goto",
        "search",
    ]
    assert VoiceSession.objects.get().voice == "marin"


def test_engine_mode_points_the_browser_at_this_site(
    owner: Any, lobby: Any, engine_upstream: RealtimeStub
) -> None:
    client, headers = csrf_client(owner)
    response = post(client, {"terminal": "lobby"}, headers)
    assert response.status_code == 200
    assert response.json()["calls_url"] == "http://testserver/engine/v1/realtime/calls"
    assert VoiceSession.objects.get().upstream == "engine"
    assert ENGINE_TEST_KEY not in response.content.decode()


def test_the_rate_limit_is_per_user_with_retry_after(
    owner: Any,
    lobby: Any,
    make_user: Callable[..., Any],
    add_member: Callable[..., Any],
    openai_upstream: RealtimeStub,
) -> None:
    client, headers = csrf_client(owner)
    for _ in range(10):
        assert post(client, {"terminal": "lobby"}, headers).status_code == 200

    response = post(client, {"terminal": "lobby"}, headers)

    assert response.status_code == 429
    assert error_code(response) == "rate_limited"
    assert 1 <= int(response["Retry-After"]) <= 60
    assert VoiceSession.objects.count() == 10
    assert len(openai_upstream.requests) == 10

    other = make_user("other")
    add_member(lobby, other)
    other_client, other_headers = csrf_client(other)
    assert post(other_client, {"terminal": "lobby"}, other_headers).status_code == 200


@pytest.mark.parametrize(
    ("status", "body", "headers", "expected_status", "expected_code"),
    [
        (
            401,
            openai_error(
                f"Incorrect API key provided: {OPENAI_TEST_KEY[:10]}***",
                type="invalid_request_error",
                code="invalid_api_key",
            ),
            {},
            502,
            "upstream_auth_failed",
        ),
        (
            403,
            openai_error("Forbidden", type="request_forbidden", code=None),
            {},
            502,
            "upstream_forbidden",
        ),
        (
            429,
            openai_error("Rate limit reached", type="requests", code="rate_limit_exceeded"),
            {"Retry-After": "12"},
            429,
            "upstream_rate_limited",
        ),
        (503, b"Service Unavailable", {}, 503, "upstream_error"),
        (200, b"<html>captive portal</html>", {}, 502, "upstream_bad_response"),
        (200, b"[" * 100_000 + b"]" * 100_000, {}, 502, "upstream_bad_response"),
    ],
)
def test_upstream_failures_become_json_errors_and_a_failed_session(
    owner: Any,
    lobby: Any,
    openai_upstream: RealtimeStub,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: Any,
    headers: dict[str, str],
    expected_status: int,
    expected_code: str,
) -> None:
    for _ in range(2):  # a 5xx is retried once
        openai_upstream.reply(status, body, headers=headers)
    client, csrf = csrf_client(owner)

    response = post(client, {"terminal": "lobby"}, csrf)

    assert response.status_code == expected_status
    assert error_code(response) == expected_code
    assert "no-store" in response["Cache-Control"]
    if expected_status == 429:
        assert response["Retry-After"] == "12"
    session = VoiceSession.objects.get()
    assert session.status == VoiceSession.Status.FAILED
    assert session.end_reason.startswith(expected_code)
    assert session.token_expires_at is None
    everything = response.content.decode() + caplog.text + session.end_reason
    assert OPENAI_TEST_KEY not in everything
    assert OPENAI_TEST_KEY[:10] not in everything
    assert "Incorrect API key provided" not in everything
    assert not VoiceEvent.objects.exists()


def test_the_built_in_engine_accepts_the_minted_session(
    live_server: Any, make_terminal: Callable[..., Any], owner: Any, settings: Any
) -> None:
    """No stub: the engine this site serves mints the key, over real HTTP."""
    make_terminal(slug="lobby", name="Main Lobby")
    settings.OPENAI_API_KEY = ""
    settings.REALTIME_BASE_URL = ""
    settings.ENGINE_URL = f"{live_server.url}/engine/v1"
    settings.ENGINE_API_KEY = ENGINE_TEST_KEY
    client, headers = csrf_client(owner)

    response = post(client, {"terminal": "lobby"}, headers)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["value"] and body["value"] != ENGINE_TEST_KEY
    assert body["calls_url"] == "http://testserver/engine/v1/realtime/calls"
    session = VoiceSession.objects.get()
    assert (session.upstream, session.status) == ("engine", VoiceSession.Status.MINTED)
    assert ENGINE_TEST_KEY not in response.content.decode()
