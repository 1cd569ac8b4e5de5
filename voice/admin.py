"""Staff view of voice sessions: who talked to which terminal, the event timeline, the
tool calls, and a way to end a session (its mirror socket closes, the browser hangs up);
and every mirrored event, read-only, by session."""

from __future__ import annotations

import json
from typing import Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from voice import services
from voice.models import ToolCall, VoiceEvent, VoiceSession

PAYLOAD_PREVIEW_CHARS = 300
# A long call mirrors thousands of events: the session's page shows the latest ones and
# links to all of them, paged, in the event list.
TIMELINE_EVENTS_SHOWN = 200


def _compact(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if len(text) > PAYLOAD_PREVIEW_CHARS:
        return text[:PAYLOAD_PREVIEW_CHARS] + "…"
    return text


class _ReadOnly:
    """A record of what happened: shown, never added, changed or deleted here."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class _ReadOnlyInline(_ReadOnly, admin.TabularInline):
    extra = 0


class _EventPayload:
    @admin.display(description="Payload")
    def payload_compact(self, event: VoiceEvent) -> str:
        return _compact(event.payload)


class _LatestEventsFormSet(BaseInlineFormSet):
    """The session's latest TIMELINE_EVENTS_SHOWN events, oldest of them first."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The session's events: BaseInlineFormSet has always filtered one by now.
        events = cast("QuerySet[VoiceEvent]", self.queryset)
        latest = events.order_by("-seq").values("pk")[:TIMELINE_EVENTS_SHOWN]
        self.queryset = events.filter(pk__in=latest).order_by("seq")


class VoiceEventInline(_EventPayload, _ReadOnlyInline):
    model = VoiceEvent
    formset = _LatestEventsFormSet
    fields = readonly_fields = ("seq", "direction", "type", "payload_compact", "created_at")
    ordering = ["seq"]
    verbose_name_plural = "Event timeline"


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

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: VoiceSession | None = None,
    ) -> HttpResponse:
        """Above the timeline: how many events the session has in all and, for staff
        who may see them, a link to every one of them in the event list."""
        if obj is not None:
            total = obj.events.count()
            context["timeline"] = {
                "total": total,
                "shown": min(total, TIMELINE_EVENTS_SHOWN),
                "url": (
                    reverse("admin:voice_voiceevent_changelist") + f"?session={obj.pk}"
                    if request.user.has_perm("voice.view_voiceevent")
                    else ""
                ),
            }
        return super().render_change_form(request, context, add, change, form_url, obj)

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


class _SessionFilter(admin.SimpleListFilter):
    """One session's events, reached from its page. Offers no list of sessions (there
    are too many); once filtered it shows which one, with "All" to clear it."""

    title = "session"
    parameter_name = "session"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, f"Voice session {value}")] if value and value.isdigit() else []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None:
            return queryset
        return queryset.filter(session_id=int(value)) if value.isdigit() else queryset.none()


@admin.register(VoiceEvent)
class VoiceEventAdmin(_EventPayload, _ReadOnly, admin.ModelAdmin):
    """Every mirrored event, read-only: a record of what was said and done."""

    list_display = ["seq", "session_id", "direction", "type", "payload_compact", "created_at"]
    list_display_links = ["seq"]
    list_filter = [_SessionFilter, "direction", "created_at"]
    search_fields = ["type", "session__user__username", "session__terminal__slug"]
    # Newest sessions first, each in the browser's order: the (session, seq) index.
    ordering = ["-session_id", "seq"]
    list_per_page = 100
    # Counting every event in the table for "x of y" costs more than the page.
    show_full_result_count = False
    fields = readonly_fields = ("session", "seq", "direction", "type", "payload", "created_at")

    class Media:
        css = {"all": ("css/admin.css",)}
