"""The OpenAI image provider against a local HTTP stub that answers like the real API."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from PIL import Image

from gallery.providers import ImageProviderError, get_provider
from gallery.providers.openai import OpenAIImageConfig, OpenAIImageProvider
from tests.upstream_answers import Delivery, answer_write

API_KEY = "openai-test-key-Zq81-never-shown"
VENDOR_TEXT = "Vendor says: your prompt 'secret plans' was flagged"


@dataclass
class Stub:
    status: int = 200
    body: bytes = b""
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    delivery: Delivery = field(default_factory=Delivery)
    requests: list[dict[str, Any]] = field(default_factory=list)


def png_b64(size: tuple[int, int] = (1024, 1024), fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 90, 200)).save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def success_body(b64: str | None = None) -> bytes:
    return json.dumps(
        {
            "created": 1_760_000_000,
            "data": [{"b64_json": b64 if b64 is not None else png_b64()}],
            "usage": {
                "total_tokens": 100,
                "input_tokens": 50,
                "output_tokens": 50,
                "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            },
        }
    ).encode()


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    state = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(raw)}
            )
            if state.delay:
                time.sleep(state.delay)
            answer_write(
                self,
                status=state.status,
                body=state.body,
                headers=state.headers,
                delivery=state.delivery,
            )

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def provider_for(base_url: str, timeout: float = 5.0) -> OpenAIImageProvider:
    return OpenAIImageProvider(
        OpenAIImageConfig(
            api_key=API_KEY, base_url=base_url, model="gpt-image-1", timeout_seconds=timeout
        )
    )


def generate(provider: OpenAIImageProvider, prompt: str = "a red fox under a blue moon") -> Any:
    return provider.generate(prompt=prompt, style="", seed=1, size=768, progress=lambda n: None)


def test_success_sends_the_documented_request_and_returns_the_png(
    stub: tuple[Stub, str],
) -> None:
    state, url = stub
    state.body = success_body()
    seen: list[int] = []
    result = provider_for(url).generate(
        prompt="a red fox under a blue moon", style="", seed=1, size=768, progress=seen.append
    )
    assert Image.open(io.BytesIO(result.png)).format == "PNG"
    assert (result.width, result.height) == (1024, 1024)
    assert result.title == "Red Fox and Blue Moon"
    assert result.description == "A red fox beneath a blue moon, on a night sky."
    assert seen[-1] == 100

    [request] = state.requests
    assert request["path"] == "/v1/images/generations"
    assert request["headers"]["Authorization"] == f"Bearer {API_KEY}"
    assert request["json"] == {
        "model": "gpt-image-1",
        "prompt": "a red fox under a blue moon",
        "size": "1024x1024",
        "quality": "medium",
        "n": 1,
        "output_format": "png",
    }


def test_a_style_is_passed_to_the_model_in_the_prompt(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.body = success_body()
    provider_for(url).generate(
        prompt="a harbour", style="watercolour", seed=1, size=768, progress=lambda n: None
    )
    assert state.requests[0]["json"]["prompt"] == "a harbour. Style: watercolour."


def test_a_non_png_answer_is_stored_as_png(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.body = success_body(png_b64((64, 48), "JPEG"))
    result = generate(provider_for(url))
    assert Image.open(io.BytesIO(result.png)).format == "PNG"
    assert (result.width, result.height) == (64, 48)


ERRORS = [
    (
        401,
        error_body(
            f"Incorrect API key provided: {API_KEY}", "invalid_request_error", "invalid_api_key"
        ),
        "auth_failed",
    ),
    (
        403,
        error_body(
            f"{VENDOR_TEXT}. Your organization must be verified", "invalid_request_error", None
        ),
        "forbidden",
    ),
    (
        400,
        error_body(VENDOR_TEXT, "image_generation_user_error", "moderation_blocked"),
        "moderation_blocked",
    ),
    (400, error_body(VENDOR_TEXT, "invalid_request_error", "invalid_value", "prompt"), "rejected"),
    (400, error_body(VENDOR_TEXT, "invalid_request_error", None), "rejected"),
    (
        400,
        error_body(VENDOR_TEXT, "invalid_request_error", "invalid_value", "size"),
        "misconfigured",
    ),
    (404, error_body(VENDOR_TEXT, "invalid_request_error", "model_not_found"), "misconfigured"),
    (429, error_body(VENDOR_TEXT, "requests", "rate_limit_exceeded"), "rate_limited"),
    (429, error_body(VENDOR_TEXT, "insufficient_quota", "insufficient_quota"), "quota_exhausted"),
    (500, error_body(VENDOR_TEXT, "server_error", None), "upstream_error"),
    (503, b"<html>Service Unavailable</html>", "upstream_error"),
    (200, b"{not json", "bad_response"),
    (200, b"[]", "bad_response"),
    (200, json.dumps({"created": 1, "data": []}).encode(), "bad_response"),
    (200, success_body("!!!not-base64!!!"), "bad_response"),
    (200, success_body(base64.b64encode(b"just some bytes").decode()), "bad_response"),
]


@pytest.mark.parametrize(("status", "body", "code"), ERRORS)
def test_each_upstream_failure_becomes_a_clear_domain_error(
    stub: tuple[Stub, str],
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: bytes,
    code: str,
) -> None:
    state, url = stub
    state.status, state.body = status, body
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url))
    error = caught.value
    assert error.code == code
    assert error.message.endswith(".")
    for text in (str(error), error.message, repr(error.args), caplog.text):
        assert API_KEY not in text
        assert "secret plans" not in text
        assert "Vendor says" not in text


def test_moderation_refusal_tells_the_person_what_to_do(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.status = 400
    state.body = error_body(VENDOR_TEXT, "image_generation_user_error", "moderation_blocked")
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url))
    assert "Try describing it differently" in caught.value.message
    assert not caught.value.retryable


def test_a_slow_upstream_times_out(stub: tuple[Stub, str]) -> None:
    state, url = stub
    state.body, state.delay = success_body(), 4.0
    started = time.monotonic()
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url, timeout=0.3))
    assert caught.value.code == "timeout"
    assert caught.value.retryable
    # Gave up on the 0.3 s timeout, long before the reply would have come.
    assert time.monotonic() - started < 3.0


def test_an_unreachable_upstream_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(f"http://127.0.0.1:{port}/v1"))
    assert caught.value.code == "unreachable"
    assert API_KEY not in caplog.text


def test_the_configured_provider_is_chosen_by_settings(settings: Any, stub: Any) -> None:
    _, url = stub
    settings.IMAGE_PROVIDER = "openai"
    settings.OPENAI_API_KEY = API_KEY
    settings.OPENAI_BASE_URL = url + "/"
    provider = get_provider()
    assert isinstance(provider, OpenAIImageProvider)
    assert provider.config.base_url == url
    assert API_KEY not in repr(provider.config)
    settings.OPENAI_API_KEY = ""
    with pytest.raises(ImageProviderError) as caught:
        get_provider()
    assert caught.value.code == "not_configured"
    settings.IMAGE_PROVIDER = "local"
    assert get_provider().name == "local"
    with pytest.raises(ImageProviderError):
        get_provider("nonsense")


# --- Answers that must not hold or swamp the worker --------------------------------------


def test_an_answer_trickling_in_is_given_up_on_at_the_timeout(stub: tuple[Stub, str]) -> None:
    state, url = stub
    # Each byte comes well within the read timeout; the answer as a whole never does.
    state.body, state.delivery = success_body(), Delivery(trickle_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url, timeout=1.0))
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_an_oversized_answer_is_refused_unread(stub: tuple[Stub, str], declared: bool) -> None:
    state, url = stub
    state.delivery = Delivery(oversize_bytes=200 * 1024 * 1024, declare_length=declared)
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url, timeout=10.0))
    assert caught.value.code == "bad_response"
    # Refused at its Content-Length, or at MAX_RESPONSE_BYTES (64 MiB) when it has none.
    assert state.delivery.sent < 100 * 1024 * 1024


@pytest.mark.parametrize(
    ("status", "code", "retryable"), [(200, "bad_response", False), (503, "upstream_error", True)]
)
def test_json_nested_too_deeply_is_an_unreadable_answer(
    stub: tuple[Stub, str], status: int, code: str, retryable: bool
) -> None:
    state, url = stub
    state.status, state.body = status, b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url))
    assert (caught.value.code, caught.value.retryable) == (code, retryable)


@pytest.mark.parametrize(
    ("header", "seconds", "said"),
    [("600", 600, "10 minutes"), ("", 60, "a minute"), ("7200", 7200, "2 hours")],
)
def test_a_rate_limit_says_how_long_the_upstream_asked_to_wait(
    stub: tuple[Stub, str], header: str, seconds: int, said: str
) -> None:
    state, url = stub
    state.status = 429
    state.body = error_body("Rate limit reached", "requests", "rate_limit_exceeded")
    state.headers = {"Retry-After": header} if header else {}
    with pytest.raises(ImageProviderError) as caught:
        generate(provider_for(url))
    assert (caught.value.code, caught.value.retry_after) == ("rate_limited", seconds)
    assert caught.value.message == f"The image service is busy right now. Try again in {said}."
