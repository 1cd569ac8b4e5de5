"""Reading an upstream's HTTP answer within bounds: so many bytes, by a deadline.

requests' timeout bounds each socket read, not the whole answer: an upstream sending a
byte now and then holds the caller as long as it likes, and `Response.content` reads a
body of any size into memory before anyone can look at its size. Both OpenAI clients
(voice.clients, gallery.providers.openai) post with `stream=True` and read here.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import urllib3

CHUNK_BYTES = 64 * 1024


class AnswerTooLarge(Exception):
    """A 200 answer's body is longer than the caller accepts; the connection was
    closed unread."""


class AnswerTooSlow(Exception):
    """The body was still arriving at the deadline; the connection was closed."""


def answer_read(response: requests.Response, *, max_bytes: int, deadline: float) -> bytes:
    """The body of `response` (sent with `stream=True`), by `deadline` (time.monotonic()).

    The deadline is checked between reads, each bounded by the request's read timeout,
    so the wait is at most the deadline plus one read timeout. requests' own errors (a
    connection cut mid-body) pass through. An error's body only explains its status,
    which says enough: one past `max_bytes` is dropped (b"") rather than refused.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        return _too_large(response, declared)
    body = bytearray()
    try:
        # read1, not iter_content: urllib3's read(n) waits until n bytes have come, so a
        # trickle would be read whole before the deadline was ever looked at.
        while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
            body += chunk
            if len(body) > max_bytes:
                return _too_large(response, len(body))
            if time.monotonic() > deadline:
                raise AnswerTooSlow(len(body))
    except urllib3.exceptions.HTTPError as error:
        # As requests reports a body cut short or a read that timed out.
        response.close()
        raise requests.ConnectionError(error) from error
    except BaseException:
        # Closing drops the connection instead of returning half a body to the pool.
        response.close()
        raise
    return bytes(body)


def _too_large(response: requests.Response, size: int | str) -> bytes:
    response.close()
    if response.status_code == 200:
        raise AnswerTooLarge(size)
    return b""


def json_parse(body: bytes) -> Any:
    """The JSON in `body`; ValueError for anything else, nesting too deep included."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def error_fields(body: bytes) -> dict[str, Any]:
    """The `error` object of an OpenAI error envelope, or {} for any other body."""
    try:
        data = json_parse(body)
    except ValueError:
        return {}
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, dict) else {}


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def retry_after_seconds(headers: Mapping[str, str], *, default: int, maximum: int) -> int:
    """Seconds to wait before asking again, from Retry-After (seconds or an HTTP date)
    or OpenAI's rate-limit reset headers; `default` when none says, never over `maximum`."""
    seconds: float | None = None
    header = headers.get("Retry-After", "").strip()
    if header:
        try:
            seconds = float(header)
        except ValueError:
            try:
                when = parsedate_to_datetime(header)
                seconds = (when - datetime.now(tz=UTC)).total_seconds()
            except (TypeError, ValueError):
                seconds = None
    if seconds is None:
        resets = [
            _duration_seconds(headers.get(name, ""))
            for name in ("x-ratelimit-reset-requests", "x-ratelimit-reset-tokens")
        ]
        known = [reset for reset in resets if reset is not None]
        seconds = max(known) if known else None
    if seconds is None or seconds != seconds:  # NaN from a hostile header
        return default
    return math.ceil(min(max(seconds, 1), maximum))


def _duration_seconds(text: str) -> float | None:
    """OpenAI's reset hints look like "1s", "6m0s", "250ms"."""
    text = text.strip()
    if not text:
        return None
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(number) * scale[unit] for number, unit in parts)
