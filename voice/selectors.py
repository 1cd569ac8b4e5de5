"""Reads for voice: sessions a socket may attach to, and images a tool may talk about."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Exists, OuterRef, Q, QuerySet

from gallery.models import Image, Terminal
from gallery.selectors import AnyUser
from voice.models import VoiceEvent, VoiceSession

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


def voice_sessions_open_exist() -> bool:
    """Whether anyone's session is open: the periodic expiry check runs while one is."""
    return VoiceSession.objects.filter(status__in=OPEN_STATUSES).exists()


def voice_sessions_maybe_due(
    *,
    user_id: int | None,
    expired_before: datetime,
    minted_before: datetime,
    started_before: datetime,
) -> bool:
    """Whether any session (of the user `user_id`, or anyone's) is minted with a key that expired
    before `expired_before` (with none recorded, minted before `minted_before`) or active
    since before `started_before`: a superset of what the expiry rules find."""
    minted, active = VoiceSession.Status.MINTED, VoiceSession.Status.ACTIVE
    due = VoiceSession.objects.filter(
        Q(status=minted, token_expires_at__lt=expired_before)
        | Q(status=minted, token_expires_at__isnull=True, created_at__lt=minted_before)
        | Q(status=active, started_at__lt=started_before)
    )
    if user_id is not None:
        due = due.filter(user_id=user_id)
    return due.exists()


def voice_sessions_unused(
    *, expired_before: datetime, minted_before: datetime
) -> QuerySet[VoiceSession]:
    """Minted sessions whose call never started: the key expired before `expired_before`
    (or, with no expiry recorded, was minted before `minted_before`)."""
    return VoiceSession.objects.filter(status=VoiceSession.Status.MINTED).filter(
        Q(token_expires_at__lt=expired_before)
        | Q(token_expires_at__isnull=True, created_at__lt=minted_before)
    )


def voice_sessions_started_before(*, started_before: datetime) -> QuerySet[VoiceSession]:
    return VoiceSession.objects.filter(
        status=VoiceSession.Status.ACTIVE, started_at__lt=started_before
    )


def voice_sessions_silent_since(*, since: datetime) -> QuerySet[VoiceSession]:
    """Active sessions that started before `since` and mirrored no event after it."""
    recent = VoiceEvent.objects.filter(session_id=OuterRef("pk"), created_at__gte=since)
    return VoiceSession.objects.filter(
        status=VoiceSession.Status.ACTIVE, started_at__lt=since
    ).filter(~Exists(recent))


def terminal_image_get(*, terminal: Terminal, image_id: int) -> Image | None:
    """An image made for `terminal`, in any status (a queued one can still be described)."""
    return Image.objects.filter(terminal=terminal, pk=image_id).first()
