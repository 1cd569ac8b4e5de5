"""The voice admin: session list, filters and search, the timeline, and ending a session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from gallery.models import Terminal
from tests.voice.conftest import OPENAI_TEST_KEY, RealtimeStub
from voice.models import ToolCall, VoiceEvent, VoiceSession

LIST_URL = "/admin/voice/voicesession/"


@pytest.fixture
def staff_client(make_user: Callable[..., Any]) -> Client:
    client = Client()
    client.force_login(make_user("staff", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def sessions(
    owner: Any, make_user: Callable[..., Any], make_terminal: Callable[..., Terminal]
) -> list[VoiceSession]:
    lobby = make_terminal(slug="lobby", name="Main Lobby", images=1)
    attic = make_terminal(slug="attic", name="Attic", images=1)
    alice = make_user("alice")
    return [
        VoiceSession.objects.create(
            user=owner,
            terminal=lobby,
            upstream="openai",
            model="gpt-realtime",
            voice="verse",
            status=VoiceSession.Status.ACTIVE,
            total_tokens=321,
        ),
        VoiceSession.objects.create(
            user=alice,
            terminal=attic,
            upstream="engine",
            model="gpt-realtime",
            voice="marin",
            status=VoiceSession.Status.FAILED,
            end_reason="upstream_auth_failed: check the key",
        ),
    ]


def test_the_list_shows_filters_and_searches(
    staff_client: Client, sessions: list[VoiceSession]
) -> None:
    page = staff_client.get(LIST_URL)
    assert page.status_code == 200
    text = page.content.decode()
    for expected in ("Main Lobby", "Attic", "alice", "openai", "engine", "321", "Duration"):
        assert expected in text

    only_failed = staff_client.get(LIST_URL, {"status__exact": "failed"}).context["cl"]
    assert list(only_failed.queryset) == [sessions[1]]
    only_openai = staff_client.get(LIST_URL, {"upstream": "openai"}).context["cl"]
    assert list(only_openai.queryset) == [sessions[0]]
    by_terminal = staff_client.get(LIST_URL, {"terminal__id__exact": sessions[1].terminal_id})
    assert list(by_terminal.context["cl"].queryset) == [sessions[1]]
    by_user = staff_client.get(LIST_URL, {"q": "alice"}).context["cl"]
    assert list(by_user.queryset) == [sessions[1]]
    by_name = staff_client.get(LIST_URL, {"q": "lobby"}).context["cl"]
    assert list(by_name.queryset) == [sessions[0]]


def test_the_change_page_shows_the_timeline_in_order_read_only(
    staff_client: Client, sessions: list[VoiceSession]
) -> None:
    session = sessions[0]
    for seq, kind in ((2, "response.create"), (1, "session.created"), (3, "response.done")):
        VoiceEvent.objects.create(
            session=session,
            seq=seq,
            direction="received",
            type=kind,
            payload={"type": kind, "text": "t" * 1000},
        )
    ToolCall.objects.create(
        session=session,
        call_id="call_42",
        name="navigate_gallery",
        arguments={"action": "next"},
        status="succeeded",
        output={"ok": True, "message": "Now showing the fox."},
    )

    page = staff_client.get(f"{LIST_URL}{session.pk}/change/")

    assert page.status_code == 200
    text = page.content.decode()
    assert text.index("session.created") < text.index("response.create")
    assert text.index("response.create") < text.index("response.done")
    assert "t" * 400 not in text  # payloads are shown compactly
    assert "call_42" in text and "Now showing the fox." in text
    assert 'name="events-0-seq"' not in text  # nothing editable
    assert 'name="events-MAX_NUM_FORMS" value="0"' in text  # no rows can be added


def test_the_end_action_ends_open_sessions_only(
    staff_client: Client, sessions: list[VoiceSession]
) -> None:
    response = staff_client.post(
        LIST_URL,
        {"action": "end_sessions", "_selected_action": [s.pk for s in sessions]},
        follow=True,
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "Ended 1 session(s)." in text
    assert "1 session(s) had already ended." in text
    active, failed = (VoiceSession.objects.get(pk=s.pk) for s in sessions)
    assert active.status == VoiceSession.Status.ENDED
    assert active.end_reason == "ended by staff"
    assert failed.status == VoiceSession.Status.FAILED
    assert failed.end_reason.startswith("upstream_auth_failed")


def test_staff_who_may_only_view_cannot_end_a_call(
    make_user: Callable[..., Any], sessions: list[VoiceSession]
) -> None:
    from django.contrib.auth.models import Permission

    onlooker = make_user("onlooker", is_staff=True)
    onlooker.user_permissions.add(Permission.objects.get(codename="view_voicesession"))
    client = Client()
    client.force_login(onlooker)
    assert client.get(LIST_URL).status_code == 200

    client.post(LIST_URL, {"action": "end_sessions", "_selected_action": [sessions[0].pk]})

    assert VoiceSession.objects.get(pk=sessions[0].pk).status == VoiceSession.Status.ACTIVE


def test_sessions_cannot_be_added_or_edited(
    staff_client: Client, sessions: list[VoiceSession]
) -> None:
    assert staff_client.get(f"{LIST_URL}add/").status_code == 403
    session = sessions[0]
    staff_client.post(f"{LIST_URL}{session.pk}/change/", {"status": "ended", "model": "x"})
    session.refresh_from_db()
    assert (session.status, session.model) == ("active", "gpt-realtime")


def test_no_api_key_in_the_admin(
    staff_client: Client,
    owner: Any,
    make_terminal: Callable[..., Terminal],
    openai_upstream: RealtimeStub,
) -> None:
    make_terminal(slug="lobby")
    client = Client()
    client.force_login(owner)
    client.post("/api/realtime/", {"terminal": "lobby"}, content_type="application/json")
    session = VoiceSession.objects.get()

    for url in (LIST_URL, f"{LIST_URL}{session.pk}/change/"):
        page = staff_client.get(url)
        assert page.status_code == 200
        assert OPENAI_TEST_KEY not in page.content.decode()
