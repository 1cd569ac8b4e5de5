"""Sessions a vanished browser left open end by themselves: an unused key, the upstream's
60-minute call limit, a call that went silent. The mirror socket of an ended session
hears of it; the check runs from the token endpoint and as a self-rescheduling task."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from tests.voice.conftest import RealtimeStub
from tests.voice.test_mirror import cookie_for, event, open_mirror
from tests.voice.test_token_endpoint import csrf_client, post
from voice import services
from voice.models import VoiceEvent, VoiceSession
from voice.tasks import expire_voice_sessions

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def lobby(make_terminal: Callable[..., Any]) -> Any:
    return make_terminal(slug="lobby", images=1)


@pytest.fixture
def make_session(lobby: Any, owner: Any) -> Callable[..., VoiceSession]:
    """A session as the mirror leaves it: minted (key expiring), or active since
    `started_at` with events at the given times."""

    def make(
        *,
        user: Any = None,
        status: str = VoiceSession.Status.ACTIVE,
        token_expires_at: datetime | None = None,
        created_at: datetime | None = None,
        started_at: datetime | None = None,
        events_at: tuple[datetime, ...] = (),
    ) -> VoiceSession:
        now = timezone.now()
        session = VoiceSession.objects.create(
            user=user or owner,
            terminal=lobby,
            upstream="engine",
            model="gpt-realtime",
            voice="verse",
            status=status,
            token_expires_at=token_expires_at,
            started_at=started_at
            if started_at is not None
            else (now if status == VoiceSession.Status.ACTIVE else None),
        )
        if created_at is not None:
            VoiceSession.objects.filter(pk=session.pk).update(created_at=created_at)
        for seq, at in enumerate(events_at, start=1):
            stored = VoiceEvent.objects.create(
                session=session, seq=seq, direction="received", type="session.created", payload={}
            )
            VoiceEvent.objects.filter(pk=stored.pk).update(created_at=at)
        return session

    return make


def status_of(session: VoiceSession) -> tuple[str, str]:
    session.refresh_from_db()
    return session.status, session.end_reason


@pytest.mark.django_db
def test_a_minted_key_unused_past_its_expiry_and_grace_ends_the_session(
    make_session: Callable[..., VoiceSession],
) -> None:
    now = timezone.now()
    unused = make_session(status="minted", token_expires_at=now - 61 * SECOND)
    in_grace = make_session(status="minted", token_expires_at=now - 30 * SECOND)
    # Minting never finished (the process died mid-request): judged by its creation.
    no_expiry_old = make_session(status="minted", created_at=now - 3 * MINUTE)
    no_expiry_new = make_session(status="minted", created_at=now - 30 * SECOND)

    ended = services.voice_sessions_expire(now=now)

    assert {session.pk for session in ended} == {unused.pk, no_expiry_old.pk}
    reason = "the call never started: its key expired unused"
    assert status_of(unused) == ("ended", reason)
    assert status_of(no_expiry_old) == ("ended", reason)
    assert status_of(in_grace) == ("minted", "")
    assert status_of(no_expiry_new) == ("minted", "")
    assert unused.ended_at is not None


@pytest.mark.django_db
def test_a_call_past_the_60_minute_limit_ends_even_while_busy(
    make_session: Callable[..., VoiceSession],
) -> None:
    now = timezone.now()
    long_call = make_session(started_at=now - 61 * MINUTE, events_at=(now - MINUTE,))
    long_but_allowed = make_session(started_at=now - 59 * MINUTE, events_at=(now - MINUTE,))

    services.voice_sessions_expire(now=now)

    assert status_of(long_call) == ("ended", "the 60-minute call limit was reached")
    assert status_of(long_but_allowed) == ("active", "")


@pytest.mark.django_db
def test_a_call_that_mirrored_nothing_for_10_minutes_ends(
    make_session: Callable[..., VoiceSession],
) -> None:
    now = timezone.now()
    silent = make_session(started_at=now - 30 * MINUTE, events_at=(now - 11 * MINUTE,))
    talking = make_session(
        started_at=now - 30 * MINUTE, events_at=(now - 25 * MINUTE, now - 2 * MINUTE)
    )
    never_spoke = make_session(started_at=now - 11 * MINUTE)
    just_started = make_session(started_at=now - 5 * MINUTE)

    ended = services.voice_sessions_expire(now=now)

    assert {session.pk for session in ended} == {silent.pk, never_spoke.pk}
    reason = "nothing was heard from the page for 10 minutes"
    assert status_of(silent) == ("ended", reason)
    assert status_of(never_spoke) == ("ended", reason)
    assert status_of(talking) == ("active", "")
    assert status_of(just_started) == ("active", "")


@pytest.mark.django_db
def test_finished_sessions_are_left_alone_and_a_second_run_ends_nothing(
    make_session: Callable[..., VoiceSession],
) -> None:
    now = timezone.now()
    old = now - 2 * 60 * MINUTE
    hung_up = make_session(status="ended", started_at=old)
    VoiceSession.objects.filter(pk=hung_up.pk).update(end_reason="hang-up", ended_at=old)
    failed = make_session(status="failed", created_at=old)
    make_session(started_at=old)

    assert len(services.voice_sessions_expire(now=now)) == 1
    assert services.voice_sessions_expire(now=now) == []
    hung_up.refresh_from_db()
    assert (hung_up.status, hung_up.end_reason, hung_up.ended_at) == ("ended", "hang-up", old)
    assert status_of(failed) == ("failed", "")


@pytest.mark.django_db
def test_expiring_for_one_user_leaves_other_users_sessions(
    make_session: Callable[..., VoiceSession], make_user: Callable[..., Any], owner: Any
) -> None:
    now = timezone.now()
    mine = make_session(started_at=now - 61 * MINUTE)
    theirs = make_session(user=make_user(), started_at=now - 61 * MINUTE)

    assert services.voice_sessions_expire(user=owner, now=now) == [mine]
    assert status_of(theirs) == ("active", "")


@pytest.mark.django_db
def test_open_sessions_none_due_cost_the_token_endpoint_one_query(
    make_session: Callable[..., VoiceSession],
    owner: Any,
    django_assert_num_queries: Callable[..., Any],
) -> None:
    """A user with sessions open that no rule ends yet (a reloaded page, a second tab):
    the check the token endpoint runs for them is one query, whatever the rules."""
    now = timezone.now()
    make_session(status=VoiceSession.Status.MINTED, token_expires_at=now + MINUTE)
    make_session(started_at=now - 5 * MINUTE, events_at=(now - MINUTE,))
    with django_assert_num_queries(1):
        assert services.voice_sessions_expire(user=owner, now=now) == []


@pytest.mark.django_db(transaction=True)
async def test_an_open_mirror_socket_is_told_and_closed(
    make_session: Callable[..., VoiceSession], owner: Any
) -> None:
    session = await database_sync_to_async(make_session)(status="minted")
    cookie = await database_sync_to_async(cookie_for)(owner)
    socket = await open_mirror(session, cookie)
    await socket.send(event(1, {"type": "session.created"}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}

    later = timezone.now() + 11 * MINUTE
    ended = await sync_to_async(services.voice_sessions_expire)(now=later)

    assert [s.pk for s in ended] == [session.pk]
    reason = "nothing was heard from the page for 10 minutes"
    assert await socket.receive() == {"type": "session.ended", "reason": reason}
    assert await socket.receive_close() == 4000


def waiting_checks() -> int:
    return DBTaskResult.objects.filter(
        task_path=expire_voice_sessions.module_path, status="READY"
    ).count()


@pytest.mark.django_db
def test_the_task_ends_due_sessions_and_checks_again_while_any_stay_open(
    make_session: Callable[..., VoiceSession],
) -> None:
    now = timezone.now()
    due = make_session(started_at=now - 61 * MINUTE)
    still_open = make_session()

    assert expire_voice_sessions.call() == 1
    assert status_of(due)[0] == "ended"
    assert waiting_checks() == 1
    check = DBTaskResult.objects.get(task_path=expire_voice_sessions.module_path)
    assert check.run_after is not None and check.run_after > now

    VoiceSession.objects.filter(pk=still_open.pk).update(status="ended")
    DBTaskResult.objects.all().delete()
    assert expire_voice_sessions.call() == 0
    assert waiting_checks() == 0  # nothing open: nothing to check for


@pytest.mark.django_db
def test_the_token_endpoint_ends_the_users_abandoned_sessions_and_schedules_one_check(
    lobby: Any,
    owner: Any,
    make_user: Callable[..., Any],
    make_session: Callable[..., VoiceSession],
    engine_upstream: RealtimeStub,
) -> None:
    long_ago = timezone.now() - 20 * MINUTE
    abandoned = make_session(status="minted", token_expires_at=long_ago, created_at=long_ago)
    someone_elses = make_session(
        user=make_user(), status="minted", token_expires_at=long_ago, created_at=long_ago
    )
    client, headers = csrf_client(owner)

    first = post(client, {"terminal": "lobby"}, headers)
    second = post(client, {"terminal": "lobby"}, headers)

    assert first.status_code == second.status_code == 200
    assert status_of(abandoned) == ("ended", "the call never started: its key expired unused")
    assert status_of(someone_elses) == ("minted", "")
    new = VoiceSession.objects.get(pk=second.json()["session_id"])
    assert new.status == "minted"
    assert waiting_checks() == 1
