"""Reads for voice: sessions a socket may attach to, and images a tool may talk about."""

from __future__ import annotations

from gallery.models import Image, Terminal
from gallery.selectors import AnyUser
from voice.models import VoiceSession

OPEN_STATUSES = (VoiceSession.Status.MINTED, VoiceSession.Status.ACTIVE)


def voice_session_for_mirror(*, session_id: int, user: AnyUser) -> VoiceSession | None:
    """The user's own session, if it is still open; None for anything else."""
    if not user.is_authenticated:
        return None
    return (
        VoiceSession.objects.select_related("terminal")
        .filter(pk=session_id, user_id=user.pk, status__in=OPEN_STATUSES)
        .first()
    )


def voice_session_is_open(*, session_id: int) -> bool:
    return VoiceSession.objects.filter(pk=session_id, status__in=OPEN_STATUSES).exists()


def terminal_image_get(*, terminal: Terminal, image_id: int) -> Image | None:
    """An image made for `terminal`, in any status (a queued one can still be described)."""
    return Image.objects.filter(terminal=terminal, pk=image_id).first()
