"""The one place that talks to the Realtime upstream (OpenAI, or the built-in engine).

Settings are read once into a frozen `RealtimeConfig`. Every failure becomes a
`RealtimeError` whose message a person can act on; the vendor's own text (which can
quote part of the key) is never passed on, and the key is never logged or returned.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from http.cookiejar import Cookie, DefaultCookiePolicy
from typing import Any, Literal

import requests
import requests.adapters
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

from artterminal import upstream_http

logger = logging.getLogger(__name__)

OPENAI_BASE_URL = "https://api.openai.com/v1"
# (connect, read): minting is quick; a stuck upstream must not hold a worker thread.
TIMEOUT_SECONDS: tuple[float, float] = (3.05, 10.0)
# Waits before the retries of a failed mint; a mint that never reached the upstream, or
# that the upstream failed with a 5xx, is safe to repeat (an unused key just expires).
RETRY_DELAYS_SECONDS: tuple[float, ...] = (0.5,)
DEFAULT_RETRY_AFTER_SECONDS = 10
MAX_RETRY_AFTER_SECONDS = 3600
MAX_RESPONSE_BYTES = 256 * 1024

Upstream = Literal["openai", "engine"]
# Connections kept open per upstream host: a mint then skips the TCP (and TLS)
# handshake. Past this many mints at once, urllib3 opens more and closes them after.
POOL_SIZE = 32


@dataclass(frozen=True)
class RealtimeConfig:
    upstream: Upstream
    base_url: str
    api_key: str = field(repr=False)
    # None when the browser reaches the built-in engine on this very site.
    browser_base_url: str | None
    model: str
    voice: str
    token_ttl_seconds: int

    def calls_url(self, *, engine_root: str) -> str:
        """Where the browser posts its SDP offer; `engine_root` is this site's /engine/v1."""
        base = self.browser_base_url if self.browser_base_url is not None else engine_root
        return f"{base.rstrip('/')}/realtime/calls"


@dataclass(frozen=True)
class ClientSecret:
    value: str = field(repr=False)
    expires_at: datetime


class RealtimeError(Exception):
    """A failure to mint a key; `code` is stable, `message` is for people."""

    code = "realtime_error"
    http_status = 502

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class RealtimeUnavailable(RealtimeError):
    """The upstream could not be reached or failed on its side; trying later may work."""

    code = "upstream_unavailable"
    http_status = 503


class RealtimeRejected(RealtimeError):
    """The upstream refused this site's request; an administrator has to act."""

    code = "upstream_rejected"
    http_status = 502


class RealtimeBadResponse(RealtimeError):
    """The upstream answered with something that is not a client secret."""

    code = "upstream_bad_response"
    http_status = 502


class RealtimeRateLimited(RealtimeError):
    code = "upstream_rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


@lru_cache(maxsize=1)
def realtime_config() -> RealtimeConfig:
    """OpenAI when a key is set, otherwise the built-in engine."""
    override = settings.REALTIME_BASE_URL.rstrip("/")
    common: dict[str, Any] = {
        "model": settings.REALTIME_MODEL,
        "voice": settings.REALTIME_VOICE,
        "token_ttl_seconds": settings.REALTIME_TOKEN_TTL_SECONDS,
    }
    if settings.OPENAI_API_KEY:
        base = override or OPENAI_BASE_URL
        return RealtimeConfig(
            upstream="openai",
            base_url=base,
            api_key=settings.OPENAI_API_KEY,
            browser_base_url=base,
            **common,
        )
    return RealtimeConfig(
        upstream="engine",
        base_url=override or settings.ENGINE_URL.rstrip("/"),
        api_key=settings.ENGINE_API_KEY,
        browser_base_url=override or None,
        **common,
    )


@receiver(setting_changed)
def _forget_config(*, setting: str, **kwargs: Any) -> None:
    # Tests (and nothing else) change settings at run time.
    if setting.startswith(("REALTIME_", "OPENAI_", "ENGINE_")):
        realtime_config.cache_clear()


def client_secret_create(
    *, session: dict[str, Any], config: RealtimeConfig | None = None
) -> ClientSecret:
    """Mint a short-lived client secret for `session` (a GA realtime session config)."""
    config = config or realtime_config()
    if not config.api_key:
        raise RealtimeUnavailable(
            "Voice is not set up on this server: an administrator needs to set "
            + ("OPENAI_API_KEY." if config.upstream == "openai" else "ENGINE_API_KEY."),
            code="not_configured",
        )
    body = {
        "expires_after": {"anchor": "created_at", "seconds": config.token_ttl_seconds},
        "session": session,
    }
    url = f"{config.base_url}/realtime/client_secrets"
    attempt = 0
    while True:
        try:
            response = _post(url=url, body=body, api_key=config.api_key)
            return _client_secret_from(response, config=config)
        except _Retryable as retryable:
            if attempt >= len(RETRY_DELAYS_SECONDS):
                raise retryable.error from None
            logger.info("Realtime mint retried after %s", retryable.error.code)
            time.sleep(RETRY_DELAYS_SECONDS[attempt])
            attempt += 1


class _Retryable(Exception):
    def __init__(self, error: RealtimeError) -> None:
        super().__init__(error.code)
        self.error = error


class _NoCookies(DefaultCookiePolicy):
    """Every user's mint shares the pooled session: no cookie may carry over."""

    def set_ok(self, cookie: Cookie, request: Any) -> bool:
        return False

    def return_ok(self, cookie: Cookie, request: Any) -> bool:
        return False


def _new_session() -> requests.Session:
    session = requests.Session()
    session.cookies.set_policy(_NoCookies())
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


# One per process, shared by threads: urllib3's pool is thread-safe, and nothing here
# changes the session after it is built (no cookies, no per-request state).
_session = _new_session()


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes


def _post(*, url: str, body: dict[str, Any], api_key: str) -> _Answer:
    # requests' timeout bounds each read; the deadline bounds the whole answer.
    deadline = time.monotonic() + sum(TIMEOUT_SECONDS)
    try:
        response = _session.post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
            stream=True,
        )
    except requests.ConnectionError as error:
        # Includes a connect timeout: the request never reached the upstream.
        logger.warning("Realtime upstream unreachable: %s", type(error).__name__)
        raise _Retryable(
            RealtimeUnavailable(
                "Could not reach the voice service. Check that it is running, then try again.",
                code="upstream_unreachable",
            )
        ) from None
    except requests.Timeout:
        raise _timed_out() from None
    except requests.RequestException as error:
        raise _failed(error) from None
    try:
        answer = upstream_http.answer_read(
            response, max_bytes=MAX_RESPONSE_BYTES, deadline=deadline
        )
    except upstream_http.AnswerTooSlow:
        raise _timed_out() from None
    except upstream_http.AnswerTooLarge:
        raise _unreadable() from None
    except requests.RequestException as error:
        raise _failed(error) from None
    return _Answer(status=response.status_code, headers=response.headers, body=answer)


def _timed_out() -> RealtimeUnavailable:
    logger.warning("Realtime upstream timed out")
    return RealtimeUnavailable(
        "The voice service did not answer in time. Try again in a moment.",
        code="upstream_timeout",
    )


def _failed(error: requests.RequestException) -> RealtimeUnavailable:
    logger.warning("Realtime request failed: %s", type(error).__name__)
    return RealtimeUnavailable(
        "Could not reach the voice service. Try again in a moment.",
        code="upstream_unreachable",
    )


def _client_secret_from(answer: _Answer, *, config: RealtimeConfig) -> ClientSecret:
    status = answer.status
    if status == 200:
        return _parse_secret(answer.body)
    error = upstream_http.error_fields(answer.body)
    # The vendor's message can quote the key: log only its stable fields.
    logger.warning(
        "Realtime mint refused: status=%s type=%s code=%s param=%s",
        status,
        error.get("type"),
        error.get("code"),
        error.get("param"),
    )
    if status == 401:
        raise RealtimeRejected(
            "The voice service did not accept this site's API key. "
            "An administrator needs to check the key in the server settings.",
            code="upstream_auth_failed",
        )
    if status == 403:
        raise RealtimeRejected(
            "The voice service refused this site's account (region or organisation "
            "settings). An administrator needs to check the account.",
            code="upstream_forbidden",
        )
    if status == 429:
        if error.get("code") == "insufficient_quota" or error.get("type") == "insufficient_quota":
            raise RealtimeRejected(
                "The voice service's quota for this site is used up. "
                "An administrator needs to check the plan and billing.",
                code="upstream_quota_exceeded",
            )
        retry_after = upstream_http.retry_after_seconds(
            answer.headers, default=DEFAULT_RETRY_AFTER_SECONDS, maximum=MAX_RETRY_AFTER_SECONDS
        )
        raise RealtimeRateLimited(
            f"The voice service is busy. Try again in {retry_after} seconds.",
            retry_after=retry_after,
        )
    if status in (400, 404, 409, 422):
        param = error.get("param")
        detail = f" (the setting “{param}”)" if isinstance(param, str) and _is_name(param) else ""
        raise RealtimeRejected(
            f"The voice service rejected this site's session settings{detail}. "
            f"An administrator needs to check REALTIME_MODEL and REALTIME_VOICE "
            f"for {config.upstream}.",
            code="upstream_rejected_request",
        )
    if status >= 500:
        raise _Retryable(
            RealtimeUnavailable(
                "The voice service is having trouble right now. Try again in a minute.",
                code="upstream_error",
            )
        )
    raise RealtimeBadResponse(
        f"The voice service answered with an unexpected status ({status}).",
        code="upstream_unexpected_status",
    )


def _unreadable() -> RealtimeBadResponse:
    return RealtimeBadResponse(
        "The voice service sent an answer this site could not read. Try again; "
        "if it keeps happening an administrator needs to check REALTIME_BASE_URL."
    )


def _parse_secret(body: bytes) -> ClientSecret:
    bad = _unreadable()
    try:
        data = upstream_http.json_parse(body)
    except ValueError:
        raise bad from None
    if not isinstance(data, dict):
        raise bad
    value = data.get("value")
    expires_at = data.get("expires_at")
    if not isinstance(value, str) or not value or len(value) > 4096:
        raise bad
    if not isinstance(expires_at, int) or isinstance(expires_at, bool) or expires_at <= 0:
        raise bad
    try:
        expiry = datetime.fromtimestamp(expires_at, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise bad from None
    return ClientSecret(value=value, expires_at=expiry)


def _is_name(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9_.\[\]]{1,80}", text))
