"""The mirror socket ws/voice/<id>/ through the real ASGI application (origin check,
session cookie, routing): storing events, acks, tool calls and the end of a session."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import DataError
from django.test import Client

from artterminal.asgi import application
from gallery import broadcast
from gallery.models import Image, Terminal, TerminalMembership
from voice import services, tools
from voice.models import ToolCall, VoiceEvent, VoiceSession

pytestmark = pytest.mark.django_db(transaction=True)

LOCAL_ORIGIN = b"http://localhost"
TIMEOUT = 5
FUNCTION_DONE = "response.function_call_arguments.done"


def cookie_for(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    value = client.cookies[settings.SESSION_COOKIE_NAME].value
    return f"{settings.SESSION_COOKIE_NAME}={value}".encode()


class Socket:
    def __init__(self, path: str, *, cookie: bytes | None, origin: bytes = LOCAL_ORIGIN) -> None:
        headers = [(b"origin", origin)]
        if cookie is not None:
            headers.append((b"cookie", cookie))
        self.communicator = WebsocketCommunicator(application, path, headers=headers)

    async def connect(self) -> bool:
        connected, _ = await self.communicator.connect(timeout=TIMEOUT)
        return connected

    async def send(self, data: Any) -> None:
        await self.communicator.send_json_to(data)

    async def send_text(self, text: str) -> None:
        await self.communicator.send_to(text_data=text)

    async def receive(self) -> dict[str, Any]:
        message = await self.communicator.receive_json_from(timeout=TIMEOUT)
        assert isinstance(message, dict)
        return message

    async def receive_close(self) -> int | None:
        output = await self.communicator.receive_output(timeout=TIMEOUT)
        assert output["type"] == "websocket.close", output
        return output.get("code")

    async def receive_nothing(self) -> bool:
        return await self.communicator.receive_nothing(timeout=0.3)

    async def disconnect(self) -> None:
        await self.communicator.disconnect()


def mirror_path(session: VoiceSession) -> str:
    return f"/ws/voice/{session.pk}/"


def event(seq: int, payload: dict[str, Any], direction: str = "received") -> dict[str, Any]:
    return {"type": "mirror.event", "seq": seq, "direction": direction, "event": payload}


def function_call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {
        "type": FUNCTION_DONE,
        "event_id": f"event_{call_id}",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "call_id": call_id,
        "name": name,
        "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments),
    }


@pytest.fixture
def world(make_terminal: Callable[..., Terminal], owner: Any) -> Callable[[], Any]:
    """A terminal with three images and a minted voice session of its owner, made in a
    worker thread (the test's loop must not touch the database itself)."""

    @database_sync_to_async
    def make() -> tuple[Terminal, VoiceSession, bytes]:
        terminal = make_terminal(slug="lobby", images=3)
        session = VoiceSession.objects.create(
            user=owner, terminal=terminal, upstream="engine", model="gpt-realtime", voice="verse"
        )
        return terminal, session, cookie_for(owner)

    return make


async def open_mirror(session: VoiceSession, cookie: bytes) -> Socket:
    socket = Socket(mirror_path(session), cookie=cookie)
    assert await socket.connect()
    return socket


@database_sync_to_async
def stored_events(session: VoiceSession) -> list[tuple[int, str, str]]:
    return list(VoiceEvent.objects.filter(session=session).values_list("seq", "direction", "type"))


@database_sync_to_async
def refreshed(instance: Any) -> Any:
    """A fresh copy from the database (the original keeps its values to compare with)."""
    return type(instance).objects.get(pk=instance.pk)


async def tool_round(socket: Socket, seq: int, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a function call; return its decoded output after checking the reply order."""
    await socket.send(event(seq, payload))
    result = await socket.receive()
    assert result["type"] == "tool.result", result
    assert result["call_id"] == payload["call_id"]
    assert result["name"] == payload["name"]
    assert isinstance(result["output"], str)
    assert await socket.receive() == {"type": "mirror.ack", "seq": seq}
    output = json.loads(result["output"])
    assert isinstance(output["message"], str) and output["message"]
    return output


# --- Who may connect --------------------------------------------------------------------


async def test_the_owner_connects_and_others_are_refused(
    world: Callable[[], Any], make_user: Callable[..., Any], add_member: Callable[..., Any]
) -> None:
    terminal, session, cookie = await world()
    other = await database_sync_to_async(make_user)("other")
    # Even another controller of the same terminal may not attach to this session.
    await database_sync_to_async(add_member)(terminal, other)
    other_cookie = await database_sync_to_async(cookie_for)(other)

    for refused in (
        Socket(mirror_path(session), cookie=other_cookie),
        Socket(mirror_path(session), cookie=None),
        Socket(mirror_path(session), cookie=cookie, origin=b"https://evil.example"),
        Socket(f"/ws/voice/{session.pk + 1000}/", cookie=cookie),
    ):
        assert await refused.connect() is False
        await refused.disconnect()

    socket = await open_mirror(session, cookie)
    assert await socket.receive_nothing()
    await socket.disconnect()


async def test_an_ended_session_refuses(world: Callable[[], Any]) -> None:
    _, session, cookie = await world()
    await database_sync_to_async(services.voice_session_end)(session=session, reason="hangup")
    socket = Socket(mirror_path(session), cookie=cookie)
    assert await socket.connect() is False
    await socket.disconnect()


async def test_a_user_who_lost_control_is_refused(
    world: Callable[[], Any], make_user: Callable[..., Any], add_member: Callable[..., Any]
) -> None:
    terminal, _, _ = await world()
    member = await database_sync_to_async(make_user)("member")
    membership = await database_sync_to_async(add_member)(terminal, member)
    session = await database_sync_to_async(VoiceSession.objects.create)(
        user=member, terminal=terminal, upstream="engine", model="m", voice="verse"
    )
    membership.role = TerminalMembership.Role.VIEWER
    await database_sync_to_async(membership.save)()
    socket = Socket(mirror_path(session), cookie=await database_sync_to_async(cookie_for)(member))
    assert await socket.connect() is False
    await socket.disconnect()


# --- Storing events ---------------------------------------------------------------------


async def test_events_are_stored_acked_and_deduplicated(world: Callable[[], Any]) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)

    await socket.send(event(1, {"type": "session.created", "event_id": "e1", "session": {}}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}
    session = await refreshed(session)
    assert session.status == VoiceSession.Status.ACTIVE
    assert session.started_at is not None

    await socket.send(event(2, {"type": "response.create"}, direction="sent"))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 2}
    await socket.disconnect()

    # A reconnecting browser resends what it had not seen acknowledged.
    socket = await open_mirror(session, cookie)
    await socket.send(event(2, {"type": "response.create"}, direction="sent"))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 2}
    await socket.send(event(3, {"type": "input_audio_buffer.speech_started", "item_id": "i"}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 3}
    await socket.disconnect()

    assert await stored_events(session) == [
        (1, "received", "session.created"),
        (2, "sent", "response.create"),
        (3, "received", "input_audio_buffer.speech_started"),
    ]


async def test_a_large_event_is_stored_truncated_and_audio_is_dropped(
    world: Callable[[], Any],
) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    transcript = "word " * 8000  # ~40 KB: under the frame limit, over the stored limit
    await socket.send(
        event(1, {"type": "response.output_audio_transcript.done", "transcript": transcript})
    )
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}
    await socket.send(
        event(2, {"type": "input_audio_buffer.append", "audio": "UklGRg" * 100}, "sent")
    )
    assert await socket.receive() == {"type": "mirror.ack", "seq": 2}
    await socket.disconnect()

    @database_sync_to_async
    def payloads() -> list[dict[str, Any]]:
        return [e.payload for e in VoiceEvent.objects.filter(session=session).order_by("seq")]

    big, audio = await payloads()
    assert big["truncated"] is True
    assert big["type"] == "response.output_audio_transcript.done"
    assert big["original_bytes"] > 40_000
    assert len(big["excerpt"].encode()) <= 16 * 1024
    assert audio["audio"] == "[audio omitted]"


async def test_malformed_messages_get_errors_and_are_not_stored(world: Callable[[], Any]) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)

    await socket.send_text("{not json")
    assert (await socket.receive())["code"] == "invalid_json"
    await socket.send({"type": "mirror.subscribe"})
    assert (await socket.receive())["code"] == "unknown_type"
    await socket.send(
        {"type": "mirror.event", "seq": 0, "direction": "sent", "event": {"type": "x"}}
    )
    assert (await socket.receive())["code"] == "invalid_seq"
    await socket.send(
        {"type": "mirror.event", "seq": True, "direction": "sent", "event": {"type": "x"}}
    )
    assert (await socket.receive())["code"] == "invalid_seq"
    await socket.send(event(5, {"type": "x"}, direction="sideways"))
    reply = await socket.receive()
    assert (reply["type"], reply["code"], reply["seq"]) == ("error", "invalid_direction", 5)
    await socket.send(event(6, {"no": "type"}))
    assert (await socket.receive())["seq"] == 6
    await socket.send({**event(7, {"type": "x"}), "extra": 1})
    assert (await socket.receive())["code"] == "invalid_message"
    await socket.send({"type": "mirror.hangup", "now": True})
    assert (await socket.receive())["code"] == "invalid_message"

    oversized = json.dumps(event(8, {"type": "response.done", "blob": "x" * 70_000}))
    await socket.send_text(oversized)
    reply = await socket.receive()
    assert (reply["code"], reply["seq"]) == ("frame_too_large", 8)

    # Still open and working after all that.
    await socket.send(event(9, {"type": "session.created"}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 9}
    await socket.disconnect()
    assert await stored_events(session) == [(9, "received", "session.created")]


async def test_response_done_adds_its_usage(world: Callable[[], Any]) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    usage = {"total_tokens": 120, "input_tokens": 100, "output_tokens": 20}

    def done(seq: int) -> dict[str, Any]:
        response = {"id": f"r{seq}", "status": "completed", "usage": usage}
        return event(seq, {"type": "response.done", "response": response})

    for seq in (1, 2):
        await socket.send(done(seq))
        assert await socket.receive() == {"type": "mirror.ack", "seq": seq}
    # A resend (after a lost ack) is acked again and not counted twice.
    await socket.send(done(2))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 2}
    await socket.disconnect()
    session = await refreshed(session)
    assert (session.input_tokens, session.output_tokens, session.total_tokens) == (200, 40, 240)


# --- Tools ------------------------------------------------------------------------------


async def test_navigate_moves_the_terminal_and_its_viewers_see_it(
    world: Callable[[], Any],
) -> None:
    terminal, session, cookie = await world()
    viewer = Socket(f"/ws/terminals/{terminal.slug}/", cookie=None)
    assert await viewer.connect()
    first = await viewer.receive()
    assert first["type"] == "terminal.state"
    socket = await open_mirror(session, cookie)

    output = await tool_round(
        socket, 1, function_call("call_nav", "navigate_gallery", {"action": "next"})
    )

    terminal = await refreshed(terminal)
    assert output["ok"] is True
    assert output["version"] == terminal.version == first["version"] + 1
    while True:  # skip viewer counts and the like
        message = await viewer.receive()
        if message["type"] == "terminal.state":
            break
    assert message["version"] == terminal.version
    assert message["image"]["id"] == terminal.current_image_id == output["image"]["id"]
    await socket.disconnect()
    await viewer.disconnect()


async def test_generate_describe_and_edit_through_the_mirror(world: Callable[[], Any]) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)

    generated = await tool_round(
        socket, 1, function_call("call_gen", "generate_image", {"prompt": "a red kite over dunes"})
    )
    described = await tool_round(socket, 2, function_call("call_desc", "describe_image", "{}"))
    edited = await tool_round(
        socket, 3, function_call("call_edit", "edit_image", {"instruction": "add snow"})
    )
    await socket.disconnect()

    @database_sync_to_async
    def images() -> tuple[Image, Image]:
        return Image.objects.get(pk=generated["image_id"]), Image.objects.get(pk=edited["image_id"])

    new, edit = await images()
    assert generated["ok"] and new.status == Image.Status.QUEUED and new.terminal_id == terminal.pk
    assert new.prompt == "a red kite over dunes"
    assert described["ok"] and described["image"]["id"] == terminal.current_image_id
    assert terminal.current_image.prompt in described["message"]
    assert edited["ok"] and edit.source_id == terminal.current_image_id
    assert edit.status == Image.Status.QUEUED


async def test_invalid_arguments_are_reported_and_nothing_runs(world: Callable[[], Any]) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)

    output = await tool_round(
        socket, 1, function_call("call_bad", "navigate_gallery", {"action": "sideways"})
    )
    bad_json = await tool_round(socket, 2, function_call("call_bad2", "generate_image", "{prompt:"))
    await socket.disconnect()

    assert output["ok"] is False and output["error"] == "invalid_arguments"
    assert "next, previous" in output["message"]
    assert bad_json["ok"] is False
    terminal_after = await refreshed(terminal)
    assert terminal_after.version == terminal.version

    @database_sync_to_async
    def queued() -> int:
        return Image.objects.exclude(status=Image.Status.READY).count()

    assert await queued() == 0


async def test_arguments_holding_a_nul_are_refused_and_the_call_is_still_recorded(
    world: Callable[[], Any],
) -> None:
    # The escape sits inside the arguments string, so the event itself stores fine;
    # decoded, the prompt holds a NUL, which PostgreSQL refuses to store: before, that
    # failed the call's row, and the browser was told to resend the event for ever.
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    arguments = json.dumps({"prompt": "a fox\x00 in the snow"})
    output = await tool_round(socket, 1, function_call("call_nul", "generate_image", arguments))
    await socket.disconnect()

    assert output["ok"] is False and output["error"] == "invalid_arguments"

    @database_sync_to_async
    def recorded() -> tuple[list[Any], int]:
        calls = list(ToolCall.objects.filter(session=session).values_list("call_id", "arguments"))
        return calls, Image.objects.exclude(status=Image.Status.READY).count()

    calls, queued = await recorded()
    assert calls == [("call_nul", {"unparsed": arguments})]
    assert queued == 0


async def test_a_call_the_database_refuses_is_refused_by_its_seq_not_resent(
    world: Callable[[], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(**kwargs: Any) -> Any:
        raise DataError("value too long for type character varying(60)")

    monkeypatch.setattr(tools, "tool_call_execute", refused)
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    await socket.send(event(2, function_call("call_x", "navigate_gallery", {"action": "next"})))
    reply = await socket.receive()
    assert (reply["type"], reply["code"], reply["seq"]) == ("error", "invalid_event", 2)
    await socket.disconnect()


# As JSON escapes in the frame, as a browser sends them.
@pytest.mark.parametrize("text", [r"\ud800 alone", r"a NUL \u0000 here"])
async def test_an_event_with_text_that_cannot_be_stored_is_refused_by_its_seq(
    world: Callable[[], Any], text: str
) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    frame = '{"type": "mirror.event", "seq": 3, "direction": "sent", "event": '
    frame += '{"type": "conversation.item.create", "text": "' + text + '"}}'
    await socket.send_text(frame)
    reply = await socket.receive()
    assert (reply["type"], reply["code"], reply["seq"]) == ("error", "invalid_event", 3)
    # The socket lives on.
    await socket.send(event(4, {"type": "session.created"}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 4}
    await socket.disconnect()
    assert await stored_events(session) == [(4, "received", "session.created")]


async def test_a_function_call_without_call_id_is_not_executed(world: Callable[[], Any]) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    payload = function_call("x", "navigate_gallery", {"action": "next"})
    del payload["call_id"]
    await socket.send(event(1, payload))
    reply = await socket.receive()
    assert (reply["type"], reply["code"]) == ("error", "invalid_tool_call")
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}
    await socket.disconnect()
    assert (await refreshed(terminal)).version == terminal.version


async def test_a_function_call_the_browser_claims_to_send_is_not_executed(
    world: Callable[[], Any],
) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    await socket.send(event(1, function_call("c", "navigate_gallery", {"action": "next"}), "sent"))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}
    await socket.disconnect()
    assert (await refreshed(terminal)).version == terminal.version


async def test_a_replayed_call_id_executes_once(world: Callable[[], Any]) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    call = function_call("call_once", "navigate_gallery", {"action": "next"})

    first = await tool_round(socket, 1, call)
    # The same call under a new seq (the upstream repeated it): acked, not run, no result.
    await socket.send(event(2, call))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 2}
    await socket.disconnect()

    # A resent seq after a reconnect: its result may have been lost, so it comes again.
    socket = await open_mirror(session, cookie)
    again = await tool_round(socket, 1, call)
    await socket.disconnect()

    assert again == first
    terminal_after = await refreshed(terminal)
    assert terminal_after.version == terminal.version + 1
    assert await database_sync_to_async(ToolCall.objects.filter(session=session).count)() == 1


async def test_another_call_under_a_stored_seq_is_refused_and_not_run(
    world: Callable[[], Any],
) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    await tool_round(socket, 1, function_call("call_a", "navigate_gallery", {"action": "next"}))
    # Not a resend: seq 1 holds call_a. Run, this call would leave no event behind.
    await socket.send(event(1, function_call("call_b", "navigate_gallery", {"action": "last"})))
    reply = await socket.receive()
    assert (reply["type"], reply["code"], reply["seq"]) == ("error", "seq_reused", 1)
    await socket.disconnect()

    terminal_after = await refreshed(terminal)
    assert terminal_after.version == terminal.version + 1
    calls = ToolCall.objects.filter(session=session).values_list("call_id", flat=True)
    assert await database_sync_to_async(list)(calls) == ["call_a"]


async def test_a_tool_failure_is_reported_to_the_model(world: Callable[[], Any]) -> None:
    terminal, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    output = await tool_round(
        socket,
        1,
        function_call("call_find", "navigate_gallery", {"action": "search", "query": "zebra"}),
    )
    unknown = await tool_round(socket, 2, function_call("call_x", "paint_the_walls", "{}"))
    await socket.disconnect()
    assert output == {
        "ok": False,
        "message": "No image on this terminal matches “zebra”.",
        "error": "no_match",
    }
    assert unknown["ok"] is False
    assert (await refreshed(terminal)).version == terminal.version


# --- Ending -----------------------------------------------------------------------------


async def test_hangup_ends_the_session_and_closes(world: Callable[[], Any]) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    await socket.send(event(1, {"type": "session.created"}))
    assert await socket.receive() == {"type": "mirror.ack", "seq": 1}

    await socket.send({"type": "mirror.hangup"})

    assert await socket.receive() == {"type": "session.ended", "reason": "hangup"}
    assert await socket.receive_close() == 4000
    session = await refreshed(session)
    assert session.status == VoiceSession.Status.ENDED
    assert session.ended_at is not None and session.duration_seconds is not None


async def test_logging_out_ends_the_call(world: Callable[[], Any], owner: Any) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    await sync_to_async(broadcast.user_sockets_close)(user_id=owner.pk)
    assert await socket.receive() == {"type": "session.ended", "reason": "logged out"}
    assert await socket.receive_close() == 4000
    assert (await refreshed(session)).status == VoiceSession.Status.ENDED


async def test_staff_ending_a_session_closes_its_socket(
    world: Callable[[], Any], make_user: Callable[..., Any]
) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    staff = await database_sync_to_async(make_user)("staff", is_staff=True, is_superuser=True)

    def end_in_admin() -> int:
        client = Client()
        client.force_login(staff)
        response = client.post(
            "/admin/voice/voicesession/",
            {"action": "end_sessions", "_selected_action": [session.pk]},
        )
        return response.status_code

    assert await sync_to_async(end_in_admin)() == 302
    assert await socket.receive() == {"type": "session.ended", "reason": "ended by staff"}
    assert await socket.receive_close() == 4000
    session = await refreshed(session)
    assert session.status == VoiceSession.Status.ENDED
    assert session.end_reason == "ended by staff"

    # The browser's reconnect is refused.
    late = Socket(mirror_path(session), cookie=cookie)
    assert await late.connect() is False
    await late.disconnect()


async def test_an_event_after_the_session_ended_elsewhere_ends_the_socket(
    world: Callable[[], Any],
) -> None:
    _, session, cookie = await world()
    socket = await open_mirror(session, cookie)
    # Ended by another process whose announcement this socket never got.
    await database_sync_to_async(VoiceSession.objects.filter(pk=session.pk).update)(
        status=VoiceSession.Status.ENDED, end_reason="ended by staff"
    )

    await socket.send(event(1, {"type": "session.created"}))

    assert await socket.receive() == {"type": "session.ended", "reason": "ended by staff"}
    assert await socket.receive_close() == 4000
    assert await stored_events(session) == []
