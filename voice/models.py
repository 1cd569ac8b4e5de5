"""Voice sessions, the mirrored data-channel events, and the tool calls they asked for."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class VoiceSession(models.Model):
    """One voice call of one user on one terminal, from token minting to hang-up."""

    class Status(models.TextChoices):
        MINTED = "minted", "Token minted"
        ACTIVE = "active", "Active"
        ENDED = "ended", "Ended"
        FAILED = "failed", "Failed"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="voice_sessions"
    )
    terminal = models.ForeignKey(
        "gallery.Terminal", on_delete=models.CASCADE, related_name="voice_sessions"
    )
    upstream = models.CharField(max_length=20, help_text="engine or openai")
    model = models.CharField(max_length=60)
    voice = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.MINTED)
    end_reason = models.CharField(max_length=200, blank=True)
    token_expires_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    total_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Voice session {self.pk} · {self.user} on {self.terminal}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.ended_at
        if end is None:
            return None
        return (end - self.started_at).total_seconds()


class VoiceEvent(models.Model):
    """A data-channel event mirrored by the browser, in the browser's own order."""

    class Direction(models.TextChoices):
        SENT = "sent", "Browser → upstream"
        RECEIVED = "received", "Upstream → browser"

    session = models.ForeignKey(VoiceSession, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField(help_text="The browser's sequence number.")
    direction = models.CharField(max_length=10, choices=Direction.choices)
    type = models.CharField(max_length=100)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["session", "seq"]
        constraints = [models.UniqueConstraint(fields=["session", "seq"], name="one_event_per_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class ToolCall(models.Model):
    """A function call the assistant asked for; `call_id` makes execution at-most-once."""

    class Status(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    session = models.ForeignKey(VoiceSession, on_delete=models.CASCADE, related_name="tool_calls")
    call_id = models.CharField(max_length=100)
    name = models.CharField(max_length=60)
    arguments = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=Status.choices)
    output = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["session", "call_id"], name="one_execution_per_call")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.call_id})"
