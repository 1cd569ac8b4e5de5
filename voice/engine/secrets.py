"""Who may use the engine: the server key, and the ephemeral keys (`ek_...`) it mints.

Ephemeral keys live in Django's cache so every process behind the proxy can verify
them; only a hash of the key is stored. A key starts at most one call, and only
before it expires (a started call keeps running); an attempt that fails (a bad offer,
a busy engine) leaves the key for the next one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from voice.engine.errors import EngineError, unauthorized

PREFIX = "ek_"
_CACHE_PREFIX = "engine:ek:"


@dataclass(frozen=True)
class ClientSecret:
    value: str
    expires_at: int
    session: dict[str, Any]


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header, or a 401 error."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
            code="missing_api_key",
        )
    return token


def key_matches(token: str, expected: str | None) -> bool:
    """In constant time: how long a comparison takes must not tell how much matched."""
    return bool(expected) and hmac.compare_digest(token.encode(), str(expected).encode())


def server_key_matches(token: str) -> bool:
    return key_matches(token, settings.ENGINE_API_KEY)


def server_key_check(*, authorization: str | None) -> None:
    """Allow only the engine's server key; refuse everything when none is configured."""
    if not settings.ENGINE_API_KEY:
        raise EngineError(
            "The built-in engine is disabled: ENGINE_API_KEY is not configured on the server.",
            status=503,
            type="server_error",
            code="engine_not_configured",
        )
    if not server_key_matches(bearer_token(authorization)):
        raise unauthorized("Incorrect API key provided.")


def _key(value: str) -> str:
    return _CACHE_PREFIX + hashlib.sha256(value.encode()).hexdigest()


def _used_key(value: str) -> str:
    """Marks a key that has started its call."""
    return _key(value) + ":used"


def client_secret_create(*, session: dict[str, Any], ttl_seconds: int) -> ClientSecret:
    """Mint an ephemeral key that can start one call with `session` until it expires."""
    value = PREFIX + secrets.token_urlsafe(24)
    expires_at = int(time.time()) + ttl_seconds
    session = {**session, "expires_at": expires_at}
    cache.set(_key(value), {"session": session, "expires_at": expires_at}, timeout=ttl_seconds)
    return ClientSecret(value=value, expires_at=expires_at, session=session)


def client_secret_session(*, value: str) -> dict[str, Any]:
    """The session of a live, unused ephemeral key, or a 401 error."""
    if not value.startswith(PREFIX):
        raise unauthorized("Incorrect API key provided: calls need an ephemeral key (ek_...).")
    stored = cache.get(_key(value))
    if stored is None or stored["expires_at"] <= time.time():
        raise unauthorized(
            "The ephemeral key is unknown or has expired; mint a new one for each call.",
            code="invalid_client_secret",
        )
    if cache.get(_used_key(value)):
        raise unauthorized(
            "The ephemeral key has already started a call; mint a new one for each call.",
            code="invalid_client_secret",
        )
    session: dict[str, Any] = stored["session"]
    return session


def client_secret_redeem(*, value: str) -> dict[str, Any]:
    """Claim an ephemeral key for one call (atomically: two racing calls cannot share it).

    The claim holds while the call is being set up; give it back with
    `client_secret_release` if the call does not start.
    """
    session = client_secret_session(value=value)
    ttl = max(1, int(session["expires_at"] - time.time()) + 1)
    if not cache.add(_used_key(value), True, timeout=ttl):
        raise unauthorized(
            "The ephemeral key has already started a call; mint a new one for each call.",
            code="invalid_client_secret",
        )
    return session


def client_secret_release(*, value: str) -> None:
    """Give back a key claimed for a call that did not start, so the client can retry."""
    cache.delete(_used_key(value))
