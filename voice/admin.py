"""Staff view of voice sessions: who talked to which terminal, the event timeline, the
tool calls, and a way to end a session (its mirror socket closes, the browser hangs up)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from voice import services
from voice.models import ToolCall, VoiceEvent, VoiceSession

PAYLOAD_PREVIEW_CHARS = 300


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(text) > PAYLOAD_PREVIEW_CHARS:
        return text[:PAYLOAD_PREVIEW_CHARS] + "…"
    return text


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class VoiceEventInline(_ReadOnlyInline):
    model = VoiceEvent
    fields = readonly_fields = ("seq", "direction", "type", "payload_compact", "created_at")
    ordering = ["seq"]
    verbose_name_plural = "Event timeline"

    @admin.display(description="Payload")
    def payload_compact(self, event: VoiceEvent) -> str:
        return _compact(event.payload)


class ToolCallInline(_ReadOnlyInline):
    model = ToolCall
    fields = readonly_fields = (
        "call_id",
        "name",
        "arguments_compact",
        "status",
        "output_compact",
        "created_at",
    )

    @admin.display(description="Arguments")
    def arguments_compact(self, call: ToolCall) -> str:
        return _compact(call.arguments)

    @admin.display(description="Output")
    def output_compact(self, call: ToolCall) -> str:
        return _compact(call.output)


@admin.register(VoiceSession)
class VoiceSessionAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "user",
        "terminal",
        "upstream",
        "model",
        "duration",
        "status",
        "total_tokens",
        "created_at",
    ]
    list_filter = ["status", "upstream", "terminal"]
    search_fields = ["user__username", "user__email", "terminal__name", "terminal__slug"]
    list_select_related = ["user", "terminal"]
    date_hierarchy = "created_at"
    readonly_fields = (
        "user",
        "terminal",
        "upstream",
        "model",
        "voice",
        "status",
        "end_reason",
        "token_expires_at",
        "started_at",
        "ended_at",
        "duration",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "created_at",
    )
    fields = readonly_fields
    inlines = [VoiceEventInline, ToolCallInline]
    actions = ["end_sessions"]

    class Media:
        # The timeline's layout (long payloads wrap inside the page) lives in a
        # stylesheet: the site's Content-Security-Policy refuses inline styles.
        css = {"all": ("css/admin.css",)}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Duration")
    def duration(self, session: VoiceSession) -> str:
        seconds = session.duration_seconds
        if seconds is None:
            return "–"
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}:{rest:02d}"

    # Hanging up someone's call changes the session: viewing it is not enough.
    @admin.action(description="End session (hang up the browser)", permissions=["change"])
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[VoiceSession]) -> None:
        sessions = list(queryset)
        ended = sum(
            services.voice_session_end(session=session, reason="ended by staff")
            for session in sessions
        )
        skipped = len(sessions) - ended
        self.message_user(request, f"Ended {ended} session(s).", messages.SUCCESS)
        if skipped > 0:
            self.message_user(request, f"{skipped} session(s) had already ended.", messages.WARNING)
