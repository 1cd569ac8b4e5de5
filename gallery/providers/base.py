"""What every image provider promises: one call in, a finished PNG out, or a domain error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

ProgressCallback = Callable[[int], None]


@dataclass(frozen=True)
class GeneratedImage:
    png: bytes
    width: int
    height: int
    title: str
    description: str


class ImageProviderError(Exception):
    """A generation that failed; `code` is stable, `message` is safe to show a person.

    Never carries the vendor's raw text or any credential: `message` is always ours.
    """

    def __init__(
        self, code: str, message: str, *, retryable: bool = False, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        # Seconds the upstream asked us to wait before trying again (Retry-After).
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ImageProvider(Protocol):
    name: str

    def generate(
        self,
        *,
        prompt: str,
        style: str,
        seed: int,
        size: int,
        progress: ProgressCallback,
    ) -> GeneratedImage: ...
