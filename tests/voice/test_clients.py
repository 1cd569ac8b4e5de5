"""voice.clients against a local HTTP server that answers (and fails) like OpenAI's GA API."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest

from tests.upstream_answers import Delivery
from tests.voice.conftest import ENGINE_TEST_KEY, OPENAI_TEST_KEY, RealtimeStub, openai_error
from voice import clients

SESSION = {"type": "realtime", "model": "gpt-realtime"}


def mint(**kwargs: Any) -> clients.ClientSecret:
    return clients.client_secret_create(session=SESSION, **kwargs)


def assert_no_secret_leak(error: Exception, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    message = str(error)
    logged = caplog.text
    for text in (OPENAI_TEST_KEY, *texts):
        assert text not in message
        assert text not in logged


def test_mint_sends_the_ga_request_and_reads_the_ga_answer(
    openai_upstream: RealtimeStub, settings: Any
) -> None:
    settings.REALTIME_TOKEN_TTL_SECONDS = 45
    before = time.time()

    secret = mint()

    assert secret.value == "ek_test_0123456789abcdef"
    assert before + 50 < secret.expires_at.timestamp() <= time.time() + 60
    [request] = openai_upstream.requests
    assert request.path == "/v1/realtime/client_secrets"
    assert request.headers["authorization"] == f"Bearer {OPENAI_TEST_KEY}"
    assert "openai-beta" not in request.headers
    assert request.body == {
        "expires_after": {"anchor": "created_at", "seconds": 45},
        "session": SESSION,
    }
    assert OPENAI_TEST_KEY not in repr(clients.realtime_config())
    assert secret.value not in repr(secret)


def test_openai_config_when_a_key_is_set(openai_upstream: RealtimeStub, settings: Any) -> None:
    config = clients.realtime_config()
    assert config.upstream == "openai"
    assert config.base_url == openai_upstream.base_url
    assert config.calls_url(engine_root="http://site/engine/v1") == (
        f"{openai_upstream.base_url}/realtime/calls"
    )
    settings.REALTIME_BASE_URL = ""
    config = clients.realtime_config()
    assert config.base_url == "https://api.openai.com/v1"
    assert config.calls_url(engine_root="http://site/engine/v1") == (
        "https://api.openai.com/v1/realtime/calls"
    )


def test_engine_config_without_an_openai_key(engine_upstream: RealtimeStub, settings: Any) -> None:
    config = clients.realtime_config()
    assert config.upstream == "engine"
    assert config.base_url == engine_upstream.base_url
    # The browser reaches the engine on the site it loaded the page from.
    assert config.calls_url(engine_root="https://art.example/engine/v1") == (
        "https://art.example/engine/v1/realtime/calls"
    )
    mint()
    assert engine_upstream.requests[0].headers["authorization"] == f"Bearer {ENGINE_TEST_KEY}"

    settings.REALTIME_BASE_URL = "https://voice.example/v1/"
    config = clients.realtime_config()
    assert config.upstream == "engine"
    assert config.base_url == "https://voice.example/v1"
    assert config.calls_url(engine_root="https://art.example/engine/v1") == (
        "https://voice.example/v1/realtime/calls"
    )


def test_missing_engine_key_is_a_configuration_error_without_a_request(
    engine_upstream: RealtimeStub, settings: Any
) -> None:
    settings.ENGINE_API_KEY = ""
    with pytest.raises(clients.RealtimeUnavailable) as raised:
        mint()
    assert raised.value.code == "not_configured"
    assert "ENGINE_API_KEY" in raised.value.message
    assert engine_upstream.requests == []


def test_401_means_the_key_is_wrong_without_echoing_the_vendor(
    openai_upstream: RealtimeStub, caplog: pytest.LogCaptureFixture
) -> None:
    vendor = f"Incorrect API key provided: {OPENAI_TEST_KEY[:8]}***{OPENAI_TEST_KEY[-4:]}."
    openai_upstream.reply(
        401, openai_error(vendor, type="invalid_request_error", code="invalid_api_key")
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(clients.RealtimeRejected) as raised:
        mint()

    assert raised.value.code == "upstream_auth_failed"
    assert raised.value.http_status == 502
    assert "API key" in raised.value.message and "administrator" in raised.value.message
    assert_no_secret_leak(raised.value, caplog, vendor, "Incorrect API key")
    assert len(openai_upstream.requests) == 1  # a refused key is not retried


def test_403_means_the_account_is_refused(
    openai_upstream: RealtimeStub, caplog: pytest.LogCaptureFixture
) -> None:
    vendor = "Country, region, or territory not supported"
    openai_upstream.reply(
        403,
        openai_error(vendor, type="request_forbidden", code="unsupported_country_region_territory"),
    )
    with pytest.raises(clients.RealtimeRejected) as raised:
        mint()
    assert raised.value.code == "upstream_forbidden"
    assert_no_secret_leak(raised.value, caplog, vendor)


def test_429_with_retry_after_is_rate_limited_for_that_long(openai_upstream: RealtimeStub) -> None:
    openai_upstream.reply(
        429,
        openai_error(
            "Rate limit reached for requests", type="requests", code="rate_limit_exceeded"
        ),
        headers={"Retry-After": "7"},
    )
    with pytest.raises(clients.RealtimeRateLimited) as raised:
        mint()
    assert raised.value.retry_after == 7
    assert raised.value.http_status == 429
    assert "7 seconds" in raised.value.message
    assert len(openai_upstream.requests) == 1


def test_429_reads_openai_reset_headers_when_there_is_no_retry_after(
    openai_upstream: RealtimeStub,
) -> None:
    openai_upstream.reply(
        429,
        openai_error("Rate limit reached", type="tokens", code="rate_limit_exceeded"),
        headers={"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "250ms"},
    )
    with pytest.raises(clients.RealtimeRateLimited) as raised:
        mint()
    assert raised.value.retry_after == 90


def test_429_without_any_hint_waits_a_default(openai_upstream: RealtimeStub) -> None:
    openai_upstream.reply(
        429,
        openai_error("Slow down", type="requests", code="rate_limit_exceeded"),
        headers={"Retry-After": "soon"},
    )
    with pytest.raises(clients.RealtimeRateLimited) as raised:
        mint()
    assert raised.value.retry_after == clients.DEFAULT_RETRY_AFTER_SECONDS


def test_429_insufficient_quota_needs_an_administrator_not_a_retry(
    openai_upstream: RealtimeStub,
) -> None:
    openai_upstream.reply(
        429,
        openai_error(
            "You exceeded your current quota", type="insufficient_quota", code="insufficient_quota"
        ),
    )
    with pytest.raises(clients.RealtimeRejected) as raised:
        mint()
    assert raised.value.code == "upstream_quota_exceeded"
    assert "billing" in raised.value.message


def test_400_unknown_parameter_names_the_setting_only(
    openai_upstream: RealtimeStub, caplog: pytest.LogCaptureFixture
) -> None:
    vendor = "Unknown parameter: 'session.audio.output.colour'."
    openai_upstream.reply(
        400,
        openai_error(
            vendor,
            type="invalid_request_error",
            code="unknown_parameter",
            param="session.audio.output.colour",
        ),
    )
    with pytest.raises(clients.RealtimeRejected) as raised:
        mint()
    assert raised.value.code == "upstream_rejected_request"
    assert "session.audio.output.colour" in raised.value.message
    assert_no_secret_leak(raised.value, caplog, vendor)


def test_a_500_is_retried_once_then_succeeds(openai_upstream: RealtimeStub) -> None:
    openai_upstream.reply(
        500, openai_error("The server had an error", type="server_error", code=None)
    )
    secret = mint()
    assert secret.value.startswith("ek_")
    assert len(openai_upstream.requests) == 2


def test_a_lasting_503_is_unavailable_after_one_retry(
    openai_upstream: RealtimeStub, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        openai_upstream.reply(503, b"<html>upstream connect error</html>")
    with pytest.raises(clients.RealtimeUnavailable) as raised:
        mint()
    assert raised.value.code == "upstream_error"
    assert raised.value.http_status == 503
    assert len(openai_upstream.requests) == 2
    assert_no_secret_leak(raised.value, caplog, "upstream connect error")


def test_a_read_timeout_is_unavailable_and_not_repeated(
    openai_upstream: RealtimeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clients, "TIMEOUT_SECONDS", (1.0, 0.3))
    openai_upstream.reply(200, None, delay=3.0)
    started = time.monotonic()
    with pytest.raises(clients.RealtimeUnavailable) as raised:
        mint()
    # Gave up on the 0.3 s read timeout, long before the reply (and without a retry).
    assert time.monotonic() - started < 2.5
    assert raised.value.code == "upstream_timeout"
    assert "did not answer in time" in raised.value.message
    assert len(openai_upstream.requests) == 1


def test_connection_refused_is_unavailable(settings: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` any more.
    settings.OPENAI_API_KEY = OPENAI_TEST_KEY
    settings.REALTIME_BASE_URL = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(clients.RealtimeUnavailable) as raised:
        mint()
    assert raised.value.code == "upstream_unreachable"
    assert "Could not reach the voice service" in raised.value.message


@pytest.mark.parametrize(
    "body",
    [
        b"this is not json",
        b"[1, 2, 3]",
        {"expires_at": 1900000000},
        {"value": "", "expires_at": 1900000000},
        {"value": 12345, "expires_at": 1900000000},
        {"value": "ek_x"},
        {"value": "ek_x", "expires_at": "tomorrow"},
        {"client_secret": {"value": "ek_beta_shape", "expires_at": 1900000000}},
    ],
)
def test_a_malformed_answer_is_a_bad_response(openai_upstream: RealtimeStub, body: Any) -> None:
    openai_upstream.reply(200, body)
    with pytest.raises(clients.RealtimeBadResponse) as raised:
        mint()
    assert raised.value.http_status == 502
    assert "could not read" in raised.value.message


def test_retry_after_as_an_http_date(openai_upstream: RealtimeStub) -> None:
    from email.utils import formatdate

    openai_upstream.reply(
        429,
        openai_error("Rate limit", type="requests", code="rate_limit_exceeded"),
        headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)},
    )
    with pytest.raises(clients.RealtimeRateLimited) as raised:
        mint()
    assert 28 <= raised.value.retry_after <= 31


# --- Answers that must not hold or swamp the site ----------------------------------------

NESTED_JSON = b"[" * 100_000 + b"]" * 100_000  # valid JSON, 200 kB, too deep to parse


def test_an_answer_trickling_in_is_given_up_on_at_the_timeout(
    openai_upstream: RealtimeStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each byte comes well within the read timeout; the answer as a whole never does.
    monkeypatch.setattr(clients, "TIMEOUT_SECONDS", (1.0, 1.0))
    trickle = Delivery(trickle_seconds=0.2)
    openai_upstream.reply(200, openai_upstream.success().body, delivery=trickle)
    started = time.monotonic()
    with pytest.raises(clients.RealtimeUnavailable) as raised:
        mint()
    assert raised.value.code == "upstream_timeout"
    assert time.monotonic() - started < 4
    assert trickle.sent < 40
    assert len(openai_upstream.requests) == 1


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "undeclared"])
def test_an_oversized_answer_is_refused_unread(
    openai_upstream: RealtimeStub, declared: bool
) -> None:
    huge = Delivery(oversize_bytes=100 * 1024 * 1024, declare_length=declared)
    openai_upstream.reply(200, None, delivery=huge)
    with pytest.raises(clients.RealtimeBadResponse):
        mint()
    # Refused at its Content-Length, or at MAX_RESPONSE_BYTES (256 KiB) when it has none;
    # the rest stays in the socket's buffers, never in memory.
    assert huge.sent < 16 * 1024 * 1024


def test_an_oversized_error_answer_is_still_read_by_its_status(
    openai_upstream: RealtimeStub,
) -> None:
    huge = Delivery(oversize_bytes=100 * 1024 * 1024)
    openai_upstream.reply(429, None, headers={"Retry-After": "7"}, delivery=huge)
    with pytest.raises(clients.RealtimeRateLimited) as raised:
        mint()
    assert raised.value.retry_after == 7


@pytest.mark.parametrize(
    ("status", "error"),
    [(200, clients.RealtimeBadResponse), (401, clients.RealtimeRejected)],
)
def test_json_nested_too_deeply_is_an_unreadable_answer(
    openai_upstream: RealtimeStub, status: int, error: type[clients.RealtimeError]
) -> None:
    openai_upstream.reply(status, NESTED_JSON)
    with pytest.raises(error):
        mint()
