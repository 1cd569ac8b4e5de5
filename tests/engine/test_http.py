"""The engine's HTTP surface as a client sees it: status codes, headers, error envelopes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from artterminal.asgi import application
from tests.engine.client import RealtimeClient
from tests.engine.server import EngineServer


def _post(
    server: EngineServer, path: str, *, key: str | None = None, **kwargs: Any
) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return httpx.post(f"{server.engine_url}{path}", headers=headers, timeout=10, **kwargs)


def _assert_envelope(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["code"] == code
    return error


def test_missing_key_is_401(engine_server: EngineServer) -> None:
    response = _post(engine_server, "/realtime/client_secrets", json={})
    _assert_envelope(response, 401, "missing_api_key")


def test_malformed_json_is_400(engine_server: EngineServer) -> None:
    response = _post(
        engine_server,
        "/realtime/client_secrets",
        key=engine_server.api_key,
        content=b'{"session": ',
        headers={"Content-Type": "application/json"},
    )
    _assert_envelope(response, 400, "invalid_json")


def test_body_past_djangos_upload_limit_is_an_openai_error(engine_server: EngineServer) -> None:
    body = {"session": {"type": "realtime", "instructions": "x" * 3_000_000}}
    response = _post(
        engine_server, "/realtime/client_secrets", key=engine_server.api_key, json=body
    )
    _assert_envelope(response, 400, "request_too_large")


def test_json_nested_too_deeply_is_400(engine_server: EngineServer) -> None:
    unreadable = _post(
        engine_server,
        "/realtime/client_secrets",
        key=engine_server.api_key,
        content=b"[" * 5000 + b"]" * 5000,
        headers={"Content-Type": "application/json"},
    )
    _assert_envelope(unreadable, 400, "invalid_json")
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(100):
        schema = {"type": "object", "properties": {"a": schema}}
    too_deep = _post(
        engine_server,
        "/realtime/client_secrets",
        key=engine_server.api_key,
        json={"session": {"type": "realtime", "tools": [{"name": "deep", "parameters": schema}]}},
    )
    error = _assert_envelope(too_deep, 400, "invalid_value")
    assert error["param"] == "session.tools[0].parameters"


def test_unknown_top_level_field_is_named(engine_server: EngineServer) -> None:
    response = _post(
        engine_server,
        "/realtime/client_secrets",
        key=engine_server.api_key,
        json={"session": {"type": "realtime"}, "client_secret": {}},
    )
    error = _assert_envelope(response, 400, "unknown_parameter")
    assert error["param"] == "client_secret"
    assert error["type"] == "invalid_request_error"


def test_no_csrf_token_needed_for_bearer_api(engine_server: EngineServer) -> None:
    response = _post(
        engine_server,
        "/realtime/client_secrets",
        key=engine_server.api_key,
        json={"session": {"type": "realtime"}},
        headers={"Origin": "http://evil.example", "Cookie": "csrftoken=x"},
    )
    assert response.status_code == 200
    assert response.json()["value"].startswith("ek_")


def test_methods(engine_server: EngineServer) -> None:
    for path in ("/realtime/client_secrets", "/realtime/calls"):
        preflight = httpx.options(f"{engine_server.engine_url}{path}", timeout=10)
        assert preflight.status_code == 204
        assert preflight.headers["Allow"] == "POST, OPTIONS"
        wrong = httpx.get(f"{engine_server.engine_url}{path}", timeout=10)
        _assert_envelope(wrong, 405, None)


def _key(server: EngineServer) -> str:
    response = _post(
        server,
        "/realtime/client_secrets",
        key=server.api_key,
        json={"session": {"type": "realtime"}},
    )
    value: str = response.json()["value"]
    return value


def test_calls_need_an_sdp_body(engine_server: EngineServer) -> None:
    key = _key(engine_server)
    as_json = _post(engine_server, "/realtime/calls", key=key, json={"sdp": "v=0"})
    _assert_envelope(as_json, 400, "invalid_content_type")
    not_sdp = _post(
        engine_server,
        "/realtime/calls",
        key=key,
        content=b"hello",
        headers={"Content-Type": "application/sdp"},
    )
    _assert_envelope(not_sdp, 400, "invalid_offer")
    # Past Django's DATA_UPLOAD_MAX_MEMORY_SIZE as well as the engine's own limit.
    huge = _post(
        engine_server,
        "/realtime/calls",
        key=key,
        content=b"v=0\r\n" + b"a=x\r\n" * 600_000,
        headers={"Content-Type": "application/sdp"},
    )
    assert "exceeds" in _assert_envelope(huge, 400, "invalid_offer")["message"]


async def test_a_refused_offer_leaves_the_key_for_a_retry(engine_server: EngineServer) -> None:
    key = _key(engine_server)
    # An SDP the engine only finds wanting once it tries to answer it.
    refused = _post(
        engine_server,
        "/realtime/calls",
        key=key,
        content=b"v=0\r\n",
        headers={"Content-Type": "application/sdp"},
    )
    _assert_envelope(refused, 400, "invalid_offer")
    client = RealtimeClient()
    try:
        retry = await client.connect(engine_server.engine_url, key)
        assert retry.status_code == 201, retry.text
        hung_up = _post(engine_server, f"/realtime/calls/{client.call_id}/hangup", key=key)
        assert hung_up.status_code == 200
    finally:
        await client.close()


def test_calls_refuse_the_server_key_and_unknown_ek(engine_server: EngineServer) -> None:
    for key in (engine_server.api_key, "ek_unknown"):
        response = _post(
            engine_server,
            "/realtime/calls",
            key=key,
            content=b"v=0\r\n",
            headers={"Content-Type": "application/sdp"},
        )
        _assert_envelope(
            response, 401, "invalid_api_key" if key.startswith("sk") else "invalid_client_secret"
        )


def test_hangup_of_unknown_call(engine_server: EngineServer) -> None:
    response = _post(engine_server, "/realtime/calls/rtc_nothing/hangup", key=engine_server.api_key)
    _assert_envelope(response, 404, "call_not_found")


@pytest.mark.parametrize("configured", ["", "sk-engine-configured"])
async def test_engine_refuses_everything_without_a_server_key(
    settings: Any, configured: str
) -> None:
    settings.ENGINE_API_KEY = configured
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.post(
            "/engine/v1/realtime/client_secrets",
            json={"session": {"type": "realtime"}},
            headers={"Authorization": "Bearer "},
        )
    if configured:
        _assert_envelope(response, 401, "missing_api_key")
    else:
        error = _assert_envelope(response, 503, "engine_not_configured")
        assert "ENGINE_API_KEY" in error["message"]
