"""Image providers behind one interface, chosen by `settings.IMAGE_PROVIDER`."""

from __future__ import annotations

from django.conf import settings

from gallery.providers.base import (
    GeneratedImage,
    ImageProvider,
    ImageProviderError,
    ProgressCallback,
)

__all__ = [
    "GeneratedImage",
    "ImageProvider",
    "ImageProviderError",
    "ProgressCallback",
    "get_provider",
]


def get_provider(name: str | None = None) -> ImageProvider:
    """The configured provider (or the one named): "local" or "openai"."""
    name = name or settings.IMAGE_PROVIDER
    if name == "local":
        from gallery.providers.local import LocalProvider

        return LocalProvider()
    if name == "openai":
        from gallery.providers.openai import OpenAIImageProvider

        return OpenAIImageProvider.from_settings()
    raise ImageProviderError(
        "unknown_provider", f"The image generator “{name}” is not available on this site."
    )
