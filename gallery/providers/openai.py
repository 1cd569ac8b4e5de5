"""OpenAI's image API (gpt-image-1 and kin) over HTTPS: the only module that talks to it."""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import requests
from django.conf import settings
from PIL import Image, UnidentifiedImageError

from artterminal import upstream_http
from gallery.providers.base import GeneratedImage, ImageProviderError, ProgressCallback
from gallery.providers.prompt import describe_prompt

logger = logging.getLogger(__name__)

# The sizes the GPT image models accept; we always ask for the square one.
REQUEST_SIZE = "1024x1024"
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
DEFAULT_RETRY_AFTER_SECONDS = 60
# Request fields this site sets itself: a 400 naming one is not the person's to fix.
SETTINGS_PARAMS = frozenset({"model", "size", "quality", "n", "output_format"})
MAX_RETRY_AFTER_SECONDS = 24 * 3600


@dataclass(frozen=True)
class OpenAIImageConfig:
    api_key: str
    base_url: str
    model: str
    timeout_seconds: float

    def __repr__(self) -> str:  # never let the key reach a log line or a traceback
        return f"OpenAIImageConfig(base_url={self.base_url!r}, model={self.model!r})"


class OpenAIImageProvider:
    """Generates with the Images API; every failure becomes an `ImageProviderError`."""

    name = "openai"

    def __init__(self, config: OpenAIImageConfig) -> None:
        self.config = config

    @classmethod
    def from_settings(cls) -> OpenAIImageProvider:
        if not settings.OPENAI_API_KEY:
            raise ImageProviderError(
                "not_configured", "The OpenAI image generator is selected but no API key is set."
            )
        return cls(
            OpenAIImageConfig(
                api_key=settings.OPENAI_API_KEY,
                base_url=settings.OPENAI_BASE_URL.rstrip("/"),
                model=settings.OPENAI_IMAGE_MODEL,
                timeout_seconds=settings.OPENAI_TIMEOUT_SECONDS,
            )
        )

    def generate(
        self,
        *,
        prompt: str,
        style: str,
        seed: int,
        size: int,
        progress: ProgressCallback,
    ) -> GeneratedImage:
        # The API has no seed; style is folded into the prompt the model reads.
        full_prompt = f"{prompt}. Style: {style}." if style else prompt
        progress(5)
        payload = self._post(
            {
                "model": self.config.model,
                "prompt": full_prompt,
                "size": REQUEST_SIZE,
                "quality": "medium",
                "n": 1,
                "output_format": "png",
            }
        )
        progress(85)
        png, width, height = _decode_image(payload)
        title, description = describe_prompt(prompt, style)
        progress(100)
        return GeneratedImage(
            png=png, width=width, height=height, title=title, description=description
        )

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.config.base_url}/images/generations"
        # requests' timeout bounds each read; the deadline bounds the whole answer.
        deadline = time.monotonic() + self.config.timeout_seconds
        try:
            response = requests.post(
                url,
                json=body,
                headers={"Authorization": f"Bearer {self.config.api_key}"},
                # Connecting should be quick; drawing takes up to a minute or two.
                timeout=(min(10.0, self.config.timeout_seconds), self.config.timeout_seconds),
                stream=True,
            )
            answer = upstream_http.answer_read(
                response, max_bytes=MAX_RESPONSE_BYTES, deadline=deadline
            )
        except (requests.Timeout, upstream_http.AnswerTooSlow):
            raise ImageProviderError(
                "timeout", "The image service took too long to answer. Try again.", retryable=True
            ) from None
        except upstream_http.AnswerTooLarge:
            raise ImageProviderError(
                "bad_response", "The image service sent an oversized answer."
            ) from None
        except requests.RequestException as exc:
            logger.warning("Image service unreachable: %s", type(exc).__name__)
            raise ImageProviderError(
                "unreachable",
                "The image service could not be reached. Try again later.",
                retryable=True,
            ) from None
        if response.status_code != 200:
            raise _error_for(response.status_code, response.headers, answer)
        try:
            payload = upstream_http.json_parse(answer)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise ImageProviderError(
                "bad_response", "The image service sent an answer that could not be read."
            )
        return payload


def _error_for(status: int, headers: Mapping[str, str], body: bytes) -> ImageProviderError:
    error = upstream_http.error_fields(body)
    code, kind = str(error.get("code") or ""), str(error.get("type") or "")
    # Log only what identifies the failure: the vendor's message may quote the prompt.
    logger.warning("Image service refused: status=%s code=%s type=%s", status, code, kind)
    if status == 401:
        return ImageProviderError(
            "auth_failed", "The image service rejected this site's API key. Ask an administrator."
        )
    if status == 403:
        return ImageProviderError(
            "forbidden",
            "The image service refused this site's account (the organisation may need "
            "verifying for this model). Ask an administrator.",
        )
    if code == "moderation_blocked" or (status == 400 and "safety" in kind):
        return ImageProviderError(
            "moderation_blocked",
            "The image service declined this description as unsafe. Try describing it differently.",
        )
    if status == 429 and (code == "insufficient_quota" or kind == "insufficient_quota"):
        return ImageProviderError(
            "quota_exhausted",
            "This site's image-generation quota is used up. Ask an administrator.",
        )
    if status == 429:
        wait = upstream_http.retry_after_seconds(
            headers, default=DEFAULT_RETRY_AFTER_SECONDS, maximum=MAX_RETRY_AFTER_SECONDS
        )
        return ImageProviderError(
            "rate_limited",
            f"The image service is busy right now. Try again in {_spoken_wait(wait)}.",
            retryable=True,
            retry_after=wait,
        )
    if status >= 500:
        return ImageProviderError(
            "upstream_error",
            "The image service had a problem. Try again in a few minutes.",
            retryable=True,
        )
    # Named only when it is one of ours: the vendor's text stays out of messages.
    param = str(error.get("param") or "")
    setting = param if param in SETTINGS_PARAMS else ""
    if status == 404 or (status == 400 and setting):
        # Not the person's description: this site's own request (the model, its size).
        return ImageProviderError(
            "misconfigured",
            "The image service refused this site's settings "
            f"({setting or 'the model'}). Ask an administrator to check OPENAI_IMAGE_MODEL.",
        )
    if status == 400:
        return ImageProviderError(
            "rejected", "The image service could not use this description. Try rewording it."
        )
    return ImageProviderError(
        "upstream_error", f"The image service answered with an unexpected status ({status})."
    )


def _spoken_wait(seconds: int) -> str:
    if seconds <= 60:
        return "a minute"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes" if minutes < 120 else f"{math.ceil(minutes / 60)} hours"


def _decode_image(payload: dict[str, Any]) -> tuple[bytes, int, int]:
    unreadable = ImageProviderError(
        "bad_response", "The image service sent a picture that could not be read."
    )
    data = payload.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise unreadable
    encoded = data[0].get("b64_json")
    if not isinstance(encoded, str) or not encoded:
        raise unreadable
    try:
        raw = base64.b64decode(encoded, validate=True)
        with Image.open(io.BytesIO(raw)) as picture:
            picture.load()
            width, height = picture.size
            if picture.format != "PNG":
                buffer = io.BytesIO()
                picture.convert("RGB").save(buffer, "PNG")
                raw = buffer.getvalue()
    except (
        binascii.Error,
        ValueError,
        UnidentifiedImageError,
        OSError,
        Image.DecompressionBombError,
    ):
        raise unreadable from None
    return raw, width, height
