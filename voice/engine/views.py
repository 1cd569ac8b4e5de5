"""The engine's HTTP API, shaped like OpenAI's: client secrets, WebRTC calls, hangup.

Async views: they run on Daphne's event loop, where the calls' aiortc peers live (a
sync view would also deadlock when the site's own server side calls its engine).
Parse → authorize → call a service; every refusal is OpenAI's error envelope. These
are API endpoints authenticated by bearer keys, hence CSRF-exempt.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from voice.engine import secrets
from voice.engine.call import call_start
from voice.engine.errors import EngineError, unauthorized
from voice.engine.registry import registry
from voice.engine.session import client_secret_request

MAX_SDP_BYTES = 64 * 1024

View = Callable[[HttpRequest], Awaitable[HttpResponse]]


def _error(error: EngineError) -> JsonResponse:
    return JsonResponse({"error": error.as_dict()}, status=error.status)


def _method_check(request: HttpRequest) -> HttpResponse | None:
    """Answer a preflight or a wrong method; None lets a POST through."""
    if request.method == "OPTIONS":
        response = HttpResponse(status=204)
        response["Allow"] = "POST, OPTIONS"
        return response
    if request.method != "POST":
        response = _error(
            EngineError(f"Method {request.method} is not allowed; use POST.", status=405)
        )
        response["Allow"] = "POST, OPTIONS"
        return response
    return None


def _body(request: HttpRequest, *, max_bytes: int | None, too_large: EngineError) -> bytes:
    """The request body, or `too_large` past `max_bytes` (refused unread when the
    Content-Length says so) or past Django's DATA_UPLOAD_MAX_MEMORY_SIZE, which Django
    itself would answer with an HTML page."""
    # A malformed Content-Length raises here as it would in request.body.
    declared = int(request.META.get("CONTENT_LENGTH") or 0)
    if max_bytes is not None and declared > max_bytes:
        raise too_large
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise too_large from exc
    if max_bytes is not None and len(body) > max_bytes:
        raise too_large
    return body


@csrf_exempt
async def client_secrets(request: HttpRequest) -> HttpResponse:
    """POST realtime/client_secrets: mint an ephemeral key for one call (server key)."""
    if (refusal := _method_check(request)) is not None:
        return refusal
    try:
        secrets.server_key_check(authorization=request.headers.get("Authorization"))
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        # Django's own limit (request.body checks it), answered in OpenAI's envelope.
        body = _body(
            request,
            max_bytes=None,
            too_large=EngineError(
                f"The request body exceeds {limit} bytes.", code="request_too_large"
            ),
        )
        try:
            data = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError) as exc:
            raise EngineError(
                f"We could not parse the JSON body of your request: {exc}", code="invalid_json"
            ) from exc
        except RecursionError as exc:
            raise EngineError(
                "We could not parse the JSON body of your request: it nests too deeply.",
                code="invalid_json",
            ) from exc
        session, ttl = client_secret_request(data=data)
        secret = secrets.client_secret_create(session=session, ttl_seconds=ttl)
    except EngineError as error:
        return _error(error)
    return JsonResponse(
        {"value": secret.value, "expires_at": secret.expires_at, "session": secret.session}
    )


@csrf_exempt
async def calls(request: HttpRequest) -> HttpResponse:
    """POST realtime/calls: SDP offer in (ephemeral key), 201 + SDP answer + Location out."""
    if (refusal := _method_check(request)) is not None:
        return refusal
    try:
        token = secrets.bearer_token(request.headers.get("Authorization"))
        secrets.client_secret_session(value=token)
        content_type = request.content_type or ""
        if content_type != "application/sdp":
            raise EngineError(
                "Send the SDP offer as the body with 'Content-Type: application/sdp'.",
                status=400,
                code="invalid_content_type",
            )
        body = _body(
            request,
            max_bytes=MAX_SDP_BYTES,
            too_large=EngineError(
                f"The SDP offer exceeds {MAX_SDP_BYTES} bytes.", code="invalid_offer"
            ),
        )
        try:
            offer = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EngineError("The SDP offer is not UTF-8 text.", code="invalid_offer") from exc
        if not offer.lstrip().startswith("v=0"):
            raise EngineError(
                "The body is not an SDP offer (it must start with 'v=0').", code="invalid_offer"
            )
        call_id = registry.reserve()
        try:
            session = secrets.client_secret_redeem(value=token)
        except EngineError:
            registry.release(call_id)
            raise
        # The key is claimed before answering, so a second offer racing this one is
        # refused; it is given back if no call comes of it, for the client to retry.
        try:
            call, answer = await call_start(
                registry=registry,
                call_id=call_id,
                session=session,
                client_secret=token,
                offer_sdp=offer,
            )
        except BaseException:
            secrets.client_secret_release(value=token)
            raise
    except EngineError as error:
        return _error(error)
    except TimeoutError:
        return _error(
            EngineError(
                "The engine could not gather its network candidates in time; try again.",
                status=503,
                type="server_error",
                code="ice_gathering_timeout",
            )
        )
    response = HttpResponse(answer, status=201, content_type="application/sdp")
    response["Location"] = f"{reverse('engine:calls')}/{call.id}"
    return response


@csrf_exempt
async def hangup(request: HttpRequest, call_id: str) -> HttpResponse:
    """POST realtime/calls/<id>/hangup: end a call (server key, or the call's own key)."""
    if (refusal := _method_check(request)) is not None:
        return refusal
    try:
        token = secrets.bearer_token(request.headers.get("Authorization"))
        call = registry.get(call_id)
        allowed = secrets.server_key_matches(token) or (
            call is not None and secrets.key_matches(token, call.client_secret)
        )
        if not allowed:
            raise unauthorized("Incorrect API key provided for this call.")
        if call is None:
            raise EngineError(f"Call '{call_id}' not found.", status=404, code="call_not_found")
    except EngineError as error:
        return _error(error)
    await call.close("hung up")
    return HttpResponse(status=200)
