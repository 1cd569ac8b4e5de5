"""The token endpoint: a logged-in controller of a terminal gets a short-lived key for one
voice call. JSON in, JSON out, every failure a JSON error a person can act on."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from artterminal.ratelimit import rate_limit_hit
from gallery import selectors as gallery_selectors
from gallery.models import Terminal
from voice import clients, services

MAX_BODY_BYTES = 1024
TOKENS_PER_MINUTE = 10
ENGINE_PATH = "/engine/v1"


def _error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


class _CsrfCheck(CsrfViewMiddleware):
    """Django's CSRF check, answering with the reason instead of an HTML page."""

    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _csrf_failure(request: HttpRequest) -> str | None:
    check = _CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    return reason if isinstance(reason, str) else None


def _terminal_slug(request: HttpRequest) -> str | JsonResponse:
    content_type = request.content_type or ""
    if content_type != "application/json":
        return _error(400, "invalid_request", "Send the request as JSON (application/json).")
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        length = 0
    if length > MAX_BODY_BYTES or len(request.body) > MAX_BODY_BYTES:
        return _error(400, "invalid_request", "The request body is too large.")
    try:
        data = json.loads(request.body or b"null")
    except (ValueError, RecursionError):
        return _error(400, "invalid_request", "The request body is not valid JSON.")
    if not isinstance(data, dict):
        return _error(400, "invalid_request", 'Send a JSON object like {"terminal": "lobby"}.')
    extra = sorted(set(data) - {"terminal"})
    if extra:
        return _error(400, "invalid_request", f"Unknown field “{extra[0][:40]}”.")
    slug = data.get("terminal")
    if not isinstance(slug, str) or not slug or len(slug) > 50:
        return _error(400, "invalid_request", "Say which terminal: the field “terminal”.")
    return slug


@csrf_exempt  # checked below, so a failure is a JSON error instead of an HTML page
@never_cache
@require_POST
def token(request: HttpRequest) -> HttpResponse:
    """Mint a client secret for a voice session on one terminal."""
    if not request.user.is_authenticated:
        return _error(401, "not_authenticated", "Log in to talk to the terminal.")
    reason = _csrf_failure(request)
    if reason is not None:
        return _error(
            403,
            "csrf_failed",
            "The page is out of date or its security token is missing: reload it.",
        )
    retry_after = rate_limit_hit(
        key=f"voice-token:{request.user.pk}", limit=TOKENS_PER_MINUTE, window_seconds=60
    )
    if retry_after is not None:
        return _error(
            429,
            "rate_limited",
            f"Too many voice sessions started. Try again in {retry_after} seconds.",
            Retry_After=str(retry_after),
        )
    slug = _terminal_slug(request)
    if isinstance(slug, JsonResponse):
        return slug
    terminal = Terminal.objects.select_related("current_image").filter(slug=slug).first()
    if terminal is None or not gallery_selectors.terminal_can_watch(
        user=request.user, terminal=terminal
    ):
        return _error(404, "terminal_not_found", "There is no such terminal.")
    # Sessions this user's earlier pages left open (a closed tab, a lost network) end
    # here at the latest, so the admin never shows them live beside the new one.
    services.voice_sessions_expire(user=request.user)
    try:
        started = services.voice_session_start(
            user=request.user,
            terminal=terminal,
            engine_root=request.build_absolute_uri(ENGINE_PATH),
        )
    except services.VoiceNotAllowed as refused:
        return _error(403, "forbidden", refused.message)
    except clients.RealtimeRateLimited as limited:
        return _error(429, limited.code, limited.message, Retry_After=str(limited.retry_after))
    except clients.RealtimeError as failed:
        return _error(failed.http_status, failed.code, failed.message)
    session = started.session
    return JsonResponse(
        {
            "value": started.secret.value,
            "expires_at": int(started.secret.expires_at.timestamp()),
            "calls_url": started.calls_url,
            "model": session.model,
            "voice": session.voice,
            "session_id": session.pk,
        }
    )
