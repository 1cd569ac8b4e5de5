"""The voice admin: session list, filters and search, the timeline, ending a session, and
the read-only event list a long call's timeline links to."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

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


def add_events(session: VoiceSession, count: int) -> None:
    VoiceEvent.objects.bulk_create(
        VoiceEvent(
            session=session,
            seq=seq,
            direction="received",
            type=f"event.{seq}",
            payload={"type": f"event.{seq}"},
        )
        for seq in range(1, count + 1)
    )


def change_page_queries(client: Client, session: VoiceSession) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(f"{LIST_URL}{session.pk}/change/").status_code == 200
    return len(queries)


def test_a_long_call_shows_its_latest_events_and_how_many_there_are(
    staff_client: Client, sessions: list[VoiceSession]
) -> None:
    session, short = sessions
    add_events(session, 250)
    add_events(short, 3)
    change_page_queries(staff_client, short)  # warm: content types, permissions
    # The page's queries do not grow with the events.
    assert change_page_queries(staff_client, session) == change_page_queries(staff_client, short)

    page = staff_client.get(f"{LIST_URL}{session.pk}/change/")

    text = page.content.decode()
    assert 'name="events-TOTAL_FORMS" value="200"' in text
    shown = [form.instance.seq for form in page.context["inline_admin_formsets"][0].formset]
    assert shown == list(range(51, 251))
    assert "The latest 200 of 250 events are shown below." in text
    assert f'href="/admin/voice/voiceevent/?session={session.pk}"' in text


def test_staff_who_may_view_events_follow_the_link_to_one_sessions_events(
    make_user: Callable[..., Any], sessions: list[VoiceSession]
) -> None:
    from django.contrib.auth.models import Permission

    session, other = sessions
    add_events(session, 150)
    add_events(other, 5)
    onlooker = make_user("onlooker", is_staff=True)
    onlooker.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_voicesession", "view_voiceevent"])
    )
    client = Client()
    client.force_login(onlooker)
    link = f"/admin/voice/voiceevent/?session={session.pk}"
    assert f'href="{link}"' in client.get(f"{LIST_URL}{session.pk}/change/").content.decode()

    listed = client.get(link)

    assert listed.status_code == 200
    changelist = listed.context["cl"]
    assert {event.session_id for event in changelist.queryset} == {session.pk}
    assert changelist.queryset.count() == 150
    assert [event.seq for event in changelist.result_list] == list(range(1, 101))  # paged
    assert f"Voice session {session.pk}" in listed.content.decode()  # the filter says which
    second = client.get(link + "&p=2").context["cl"].result_list
    assert [event.seq for event in second] == list(range(101, 151))
    searched = client.get(link + "&q=event.42").context["cl"].result_list
    assert [event.seq for event in searched] == [42]
    sent = client.get(link + "&direction__exact=sent").context["cl"].result_list
    assert list(sent) == []


def test_events_are_read_only_and_the_link_is_offered_only_to_who_may_follow_it(
    staff_client: Client, make_user: Callable[..., Any], sessions: list[VoiceSession]
) -> None:
    from django.contrib.auth.models import Permission

    session = sessions[0]
    add_events(session, 2)
    event = VoiceEvent.objects.get(session=session, seq=1)
    assert staff_client.get("/admin/voice/voiceevent/").status_code == 200
    assert staff_client.get(f"/admin/voice/voiceevent/{event.pk}/change/").status_code == 200
    assert staff_client.get("/admin/voice/voiceevent/add/").status_code == 403
    staff_client.post(f"/admin/voice/voiceevent/{event.pk}/change/", {"type": "forged"})
    staff_client.post(f"/admin/voice/voiceevent/{event.pk}/delete/", {"post": "yes"})
    event.refresh_from_db()
    assert event.type == "event.1"

    sessions_only = make_user("sessions-only", is_staff=True)
    sessions_only.user_permissions.add(Permission.objects.get(codename="view_voicesession"))
    client = Client()
    client.force_login(sessions_only)
    text = client.get(f"{LIST_URL}{session.pk}/change/").content.decode()
    assert "2 events." in text
    assert "/admin/voice/voiceevent/" not in text
    assert client.get(f"/admin/voice/voiceevent/?session={session.pk}").status_code == 403
