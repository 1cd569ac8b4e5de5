"""WebRTC calls against the engine in a live Daphne, from an aiortc client.

The client speaks a recording made by the engine's own text-to-speech, and the tests
assert what a browser client relies on: the event sequence, the function call's name
and arguments, the spoken confirmation (transcript events and audible frames), and
that cancelling, barging in and bad events behave as OpenAI's service does.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.engine.client import RealtimeClient, subsequence
from tests.engine.recordings import Studio, Take
from tests.engine.server import NAVIGATE, EngineServer
from voice.engine.call import MAX_CLIENT_EVENT_BYTES
from voice.engine.vad import MAX_TURN_MS

SHOW_NEXT = Take(text="show the next picture", lead_ms=300, tail_ms=900)
HELLO = Take(text="hello there", lead_ms=0, tail_ms=900)


def mint(server: EngineServer, **session: Any) -> str:
    body = {"session": {"type": "realtime", "tools": [NAVIGATE], **session}}
    response = httpx.post(
        f"{server.engine_url}/realtime/client_secrets",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    return value


@pytest.fixture(scope="session")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Studio:
    return Studio(tmp_path_factory.mktemp("recordings"))


@pytest.fixture
async def connect(
    engine_server: EngineServer,
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[RealtimeClient] = []

    async def open_call(
        munge: Callable[[str], str] | None = None,
        munge_answer: Callable[[str], str] | None = None,
        microphone_speed: float = 1.0,
        **session: Any,
    ) -> RealtimeClient:
        client = RealtimeClient(microphone_speed=microphone_speed)
        clients.append(client)
        response = await client.connect(
            engine_server.engine_url,
            mint(engine_server, **session),
            munge=munge,
            munge_answer=munge_answer,
        )
        assert response.status_code == 201, response.text
        await client.wait_for("session.created", timeout=15)
        return client

    yield open_call
    for client in clients:
        await client.close()
        if client.call_id is not None:
            httpx.post(
                f"{engine_server.engine_url}/realtime/calls/{client.call_id}/hangup",
                headers={"Authorization": f"Bearer {engine_server.api_key}"},
                timeout=10,
            )


def say_text(client: RealtimeClient, text: str) -> None:
    client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_text",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            },
        }
    )
    client.send({"type": "response.create", "event_id": "evt_respond"})


def event_ids_unique(client: RealtimeClient) -> bool:
    ids = [event["event_id"] for event in client.events]
    return len(ids) == len(set(ids)) and all(ids)


@pytest.mark.slow
async def test_spoken_command_then_spoken_confirmation(
    connect: Callable[..., Any], studio: Studio
) -> None:
    client: RealtimeClient = await connect()
    created = client.events[0]
    assert created["type"] == "session.created"
    assert created["session"]["tools"][0]["name"] == "navigate_gallery"

    client.microphone.say(studio.pcm(SHOW_NEXT))
    done = await client.wait_for("response.done", timeout=30)
    assert subsequence(
        [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "conversation.item.done",
            "conversation.item.input_audio_transcription.completed",
            "response.created",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.done",
        ],
        client.types(),
    ), client.types()
    started = await client.wait_for("input_audio_buffer.speech_started")
    committed = await client.wait_for("input_audio_buffer.committed")
    transcribed = await client.wait_for("conversation.item.input_audio_transcription.completed")
    assert started["item_id"] == committed["item_id"] == transcribed["item_id"]
    assert "next" in transcribed["transcript"]
    arguments = await client.wait_for("response.function_call_arguments.done")
    assert arguments["name"] == "navigate_gallery"
    assert json.loads(arguments["arguments"]) == {"action": "next"}
    deltas = [e["delta"] for e in client.events if e["type"].endswith("arguments.delta")]
    assert "".join(deltas) == arguments["arguments"]
    response = done["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["type"] == "function_call"
    assert response["output"][0]["call_id"] == arguments["call_id"]
    assert response["usage"]["total_tokens"] > 0

    mark = len(client.events)
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": arguments["call_id"],
                "output": json.dumps({"ok": True, "title": "A red fox"}),
            },
        }
    )
    client.send({"type": "response.create"})
    confirmed = await client.wait_for("response.done", after=mark, timeout=30)
    assert confirmed["response"]["status"] == "completed"
    assert subsequence(
        [
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_audio_transcript.delta",
            "response.output_audio_transcript.done",
            "output_audio_buffer.started",
            "output_audio_buffer.stopped",
            "response.content_part.done",
            "response.output_item.done",
            "response.done",
        ],
        client.types(mark),
    ), client.types(mark)
    transcript = await client.wait_for("response.output_audio_transcript.done", after=mark)
    assert "red fox" in transcript["transcript"].lower()
    assert (
        confirmed["response"]["output"][0]["content"][0]["transcript"] == transcript["transcript"]
    )
    assert client.heard.loud_frames > 10, client.heard
    assert event_ids_unique(client)


@pytest.mark.slow
async def test_speech_after_a_pause_is_heard(connect: Callable[..., Any], studio: Studio) -> None:
    """The engine starts recognising at a pause in the speech; a speaker who goes on
    after it is heard to the end: one turn, and the call uses every word of it."""
    client: RealtimeClient = await connect()
    # "show me" alone is small talk the engine answers in words; all of it is a command.
    first = studio.pcm(Take(text="show me", lead_ms=300, tail_ms=0))
    rest = studio.pcm(Take(text="the previous picture", lead_ms=0, tail_ms=900))
    client.microphone.say(first + bytes(300 * 32) + rest)  # a pause, not the turn's end
    await client.wait_for("response.done", timeout=30)
    assert client.types().count("input_audio_buffer.speech_stopped") == 1, client.types()
    transcribed = await client.wait_for("conversation.item.input_audio_transcription.completed")
    assert "previous" in transcribed["transcript"]
    arguments = await client.wait_for("response.function_call_arguments.done")
    assert json.loads(arguments["arguments"]) == {"action": "previous"}


@pytest.mark.slow
async def test_a_turn_of_unbroken_speech_ends_at_the_cap(
    connect: Callable[..., Any], studio: Studio
) -> None:
    """Speech with no pause long enough to end the turn is cut at vad.MAX_TURN_MS, and
    the call says so as for any turn: speech_stopped, then the commit of that audio."""
    # Ten times faster than real time: 32 s of speech in about 3 s.
    client: RealtimeClient = await connect(
        microphone_speed=10.0, audio={"input": {"turn_detection": {"type": "server_vad"}}}
    )
    phrase = studio.pcm(Take("show me the next picture", voice="marin", lead_ms=0, tail_ms=100))
    client.microphone.say(phrase * ((MAX_TURN_MS + 2000) * 32 // len(phrase) + 1))
    started = await client.wait_for("input_audio_buffer.speech_started")
    stopped = await client.wait_for("input_audio_buffer.speech_stopped", timeout=15)
    committed = await client.wait_for("input_audio_buffer.committed")
    assert started["item_id"] == stopped["item_id"] == committed["item_id"]
    assert stopped["audio_end_ms"] - started["audio_start_ms"] == MAX_TURN_MS
    # The speaker is still talking: the next turn starts at once, not after a silence.
    following = await client.wait_for(
        "input_audio_buffer.speech_started", where=lambda e: e["item_id"] != started["item_id"]
    )
    assert following["audio_start_ms"] - stopped["audio_end_ms"] < 300


@pytest.mark.slow
async def test_manual_commit_without_turn_detection(
    connect: Callable[..., Any], studio: Studio
) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    # Without turn detection the buffer holds everything since the call began.
    client.send({"type": "input_audio_buffer.clear"})
    await client.wait_for("input_audio_buffer.cleared")
    seconds = client.microphone.say(studio.pcm(SHOW_NEXT))
    await asyncio.sleep(seconds + 0.3)
    assert "input_audio_buffer.speech_started" not in client.types()
    client.send({"type": "input_audio_buffer.commit", "event_id": "evt_commit"})
    transcribed = await client.wait_for("conversation.item.input_audio_transcription.completed")
    committed = await client.wait_for("input_audio_buffer.committed")
    assert committed["item_id"] == transcribed["item_id"]
    assert "next" in transcribed["transcript"]
    # Without turn detection the client asks for the response itself.
    await asyncio.sleep(0.5)
    assert "response.created" not in client.types()
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done")
    assert json.loads(done["response"]["output"][0]["arguments"]) == {"action": "next"}


async def test_typed_text_becomes_function_call(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    say_text(client, "please show the previous picture")
    done = await client.wait_for("response.done")
    assert subsequence(
        [
            "conversation.item.added",
            "conversation.item.done",
            "response.created",
            "response.output_item.added",
            "response.function_call_arguments.done",
            "response.done",
        ],
        client.types(),
    )
    call = done["response"]["output"][0]
    assert call["name"] == "navigate_gallery"
    assert json.loads(call["arguments"]) == {"action": "previous"}


async def test_text_modality_sends_output_text(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(output_modalities=["text"])
    say_text(client, "hello there")
    done = await client.wait_for("response.done")
    types = client.types()
    assert subsequence(
        [
            "response.created",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.done",
        ],
        types,
    ), types
    assert not any(t.startswith(("output_audio_buffer", "response.output_audio")) for t in types)
    text = await client.wait_for("response.output_text.done")
    assert text["text"]
    assert done["response"]["output"][0]["content"][0]["text"] == text["text"]


async def test_session_update_is_validated_and_echoed(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect()
    client.send(
        {
            "type": "session.update",
            "event_id": "evt_update",
            "session": {"type": "realtime", "instructions": "Be brief.", "tools": []},
        }
    )
    updated = await client.wait_for("session.updated")
    assert updated["session"]["instructions"] == "Be brief."
    assert updated["session"]["tools"] == []
    client.send(
        {
            "type": "session.update",
            "event_id": "evt_bad_update",
            "session": {"type": "realtime", "audio": {"output": {"pitch": 3}}},
        }
    )
    error = await client.wait_for("error")
    assert error["error"]["event_id"] == "evt_bad_update"
    assert error["error"]["code"] == "unknown_parameter"
    assert error["error"]["param"] == "session.audio.output.pitch"


@pytest.mark.slow
async def test_response_cancel_drops_the_audio(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    say_text(client, "hello there")
    started = await client.wait_for("output_audio_buffer.started")
    client.send({"type": "response.cancel", "event_id": "evt_cancel"})
    done = await client.wait_for("response.done")
    assert done["response"]["id"] == started["response_id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    types = client.types()
    assert subsequence(
        ["output_audio_buffer.started", "output_audio_buffer.cleared", "response.done"], types
    )
    # Nothing is left to cancel, and the call still answers.
    client.send({"type": "response.cancel", "event_id": "evt_cancel_again"})
    error = await client.wait_for("error")
    assert error["error"]["event_id"] == "evt_cancel_again"
    assert error["error"]["code"] == "response_cancel_not_active"


async def test_response_cancel_of_a_queued_response(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    await asyncio.sleep(1.0)  # the buffer holds the microphone's silence meanwhile
    # The response waits behind the committed turn's transcription when it is cancelled.
    client.send({"type": "input_audio_buffer.commit", "event_id": "evt_commit"})
    client.send({"type": "response.create", "event_id": "evt_respond"})
    client.send({"type": "response.cancel", "event_id": "evt_cancel"})
    created = await client.wait_for("response.created")
    done = await client.wait_for("response.done")
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    assert done["response"]["output"] == []
    await client.wait_for("conversation.item.input_audio_transcription.completed")
    assert "error" not in client.types(), client.events
    assert client.types().count("response.created") == 1


@pytest.mark.slow
async def test_barge_in_cancels_the_spoken_reply(
    connect: Callable[..., Any], studio: Studio
) -> None:
    client: RealtimeClient = await connect()
    say_text(client, "hello there")
    started = await client.wait_for("output_audio_buffer.started")
    mark = len(client.events)
    client.microphone.say(studio.pcm(HELLO))
    barge = await client.wait_for("input_audio_buffer.speech_started", after=mark)
    done = await client.wait_for(
        "response.done", after=mark, where=lambda e: e["response"]["id"] == started["response_id"]
    )
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    types = client.types(mark)
    assert subsequence(
        [
            "input_audio_buffer.speech_started",
            "output_audio_buffer.cleared",
            "output_audio_buffer.stopped",
            "response.done",
        ],
        types,
    ), types
    assert client.events.index(barge) < client.events.index(done)


@pytest.mark.slow
async def test_silence_after_a_reply_triggers_the_idle_timeout(
    connect: Callable[..., Any],
) -> None:
    """With server_vad's idle_timeout_ms, silence that long after a response ended is
    committed as a turn (input_audio_buffer.timeout_triggered, then committed) and
    answered, as OpenAI does; the setting used to be accepted and never acted on."""
    client: RealtimeClient = await connect(
        audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}}
    )
    say_text(client, "hello there")
    replied = await client.wait_for("response.done", timeout=30)
    mark = client.events.index(replied)
    triggered = await client.wait_for("input_audio_buffer.timeout_triggered", timeout=30)
    assert client.events.index(triggered) > mark
    assert set(triggered) == {"type", "event_id", "audio_start_ms", "audio_end_ms", "item_id"}
    # Input-audio time, not the wall clock: the check runs at every packet (20 ms) or
    # gap (100 ms) of audio, each judged in whole 30 ms frames.
    assert 5000 <= triggered["audio_end_ms"] - triggered["audio_start_ms"] < 5200
    item_id = triggered["item_id"]
    committed = await client.wait_for("input_audio_buffer.committed", after=mark)
    assert committed["item_id"] == item_id
    assert client.events.index(committed) > client.events.index(triggered)
    await client.wait_for(
        "conversation.item.input_audio_transcription.completed",
        where=lambda e: e["item_id"] == item_id,
    )
    answered = await client.wait_for("response.done", after=mark + 1, timeout=30)
    assert answered["response"]["status"] == "completed"
    assert "input_audio_buffer.speech_started" not in client.types()


@pytest.mark.slow
async def test_speech_stops_the_idle_timer_until_the_next_response_ends(
    connect: Callable[..., Any], studio: Studio
) -> None:
    """Speech after a reply is not idleness: with no response to that turn
    (create_response off), the silence after it triggers nothing, until a response
    ends and the timer starts again from there."""
    client: RealtimeClient = await connect(
        output_modalities=["text"],
        audio={
            "input": {
                "turn_detection": {
                    "type": "server_vad",
                    "idle_timeout_ms": 5000,
                    "create_response": False,
                }
            }
        },
    )
    hello = studio.pcm(HELLO)
    say_text(client, "hello there")
    await client.wait_for("response.done")
    client.microphone.say(hello)
    stopped = await client.wait_for("input_audio_buffer.speech_stopped")
    await client.wait_for("conversation.item.input_audio_transcription.completed")
    # Past the timeout counted from the reply's end (the turn was about 2 s of it).
    await asyncio.sleep(5.0)
    assert "input_audio_buffer.timeout_triggered" not in client.types(), client.types()

    mark = len(client.events)
    client.send({"type": "response.create"})
    await client.wait_for("response.done", after=mark)
    triggered = await client.wait_for("input_audio_buffer.timeout_triggered", timeout=15)
    # Counted from the end of the response asked for after the wait, not of the first.
    assert triggered["audio_start_ms"] > stopped["audio_end_ms"] + 4000
    assert 5000 <= triggered["audio_end_ms"] - triggered["audio_start_ms"] < 5200


@pytest.mark.slow
async def test_new_turn_detection_restarts_the_idle_timer_at_its_own_zero(
    connect: Callable[..., Any],
) -> None:
    """A session.update that changes turn_detection starts a new detector, whose
    input-audio clock starts at zero: the idle timer counts from there, not from the
    old detector's position (which would delay it by the length of the call)."""
    client: RealtimeClient = await connect(
        output_modalities=["text"],
        audio={"input": {"turn_detection": {"type": "server_vad", "idle_timeout_ms": 5000}}},
    )
    await asyncio.sleep(1.5)  # the old detector's clock is well past zero
    say_text(client, "hello there")
    await client.wait_for("response.done")
    detection = {"type": "server_vad", "idle_timeout_ms": 5000, "silence_duration_ms": 600}
    client.send(
        {
            "type": "session.update",
            "session": {"type": "realtime", "audio": {"input": {"turn_detection": detection}}},
        }
    )
    await client.wait_for("session.updated")
    triggered = await client.wait_for("input_audio_buffer.timeout_triggered", timeout=15)
    assert triggered["audio_start_ms"] == 0
    assert 5000 <= triggered["audio_end_ms"] < 5200


def truncate(item_id: str, audio_end_ms: Any, *, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "conversation.item.truncate",
        "event_id": event_id,
        "item_id": item_id,
        "content_index": 0,
        "audio_end_ms": audio_end_ms,
        **fields,
    }


@pytest.mark.slow
async def test_a_spoken_reply_is_truncated_where_playback_stopped(
    connect: Callable[..., Any],
) -> None:
    """conversation.item.truncate used to be refused as unsupported. A spoken reply's
    audio is cut at audio_end_ms and, as OpenAI does, its transcript is dropped."""
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    say_text(client, "hello there")
    done = await client.wait_for("response.done", timeout=30)
    reply = done["response"]["output"][0]
    assert reply["content"][0]["transcript"]
    user_item = (await client.wait_for("conversation.item.added"))["item"]["id"]
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "id": "typed_reply",
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "typed, never spoken"}],
            },
        }
    )
    await client.wait_for(
        "conversation.item.done", where=lambda e: e["item"]["id"] == "typed_reply"
    )
    # A greeting is a few seconds of speech, not ten minutes.
    client.send(truncate(reply["id"], 600_000, event_id="evt_past_the_end"))
    client.send(truncate("item_nowhere", 0, event_id="evt_unknown"))
    client.send(truncate(reply["id"], 0, event_id="evt_index", content_index=1))
    client.send(truncate(user_item, 0, event_id="evt_user"))
    client.send(truncate("typed_reply", 0, event_id="evt_text"))
    client.send(truncate(reply["id"], -1, event_id="evt_negative"))
    client.send(truncate(reply["id"], "500", event_id="evt_string"))
    client.send(
        {"type": "conversation.item.truncate", "event_id": "evt_missing", "item_id": reply["id"]}
    )
    await client.wait_count("error", 8)
    errors = {e["error"]["event_id"]: e["error"] for e in client.events if e["type"] == "error"}
    expected = {
        "evt_past_the_end": ("invalid_value", "audio_end_ms"),
        "evt_unknown": ("item_not_found", "item_id"),
        "evt_index": ("invalid_value", "content_index"),
        "evt_user": ("invalid_value", "item_id"),
        "evt_text": ("invalid_value", "content_index"),
        "evt_negative": ("invalid_value", "audio_end_ms"),
        "evt_string": ("invalid_type", "audio_end_ms"),
        "evt_missing": ("missing_required_parameter", "content_index"),
    }
    assert {key: (e["code"], e["param"]) for key, e in errors.items()} == expected
    assert all(e["type"] == "invalid_request_error" for e in errors.values())

    client.send(truncate(reply["id"], 500, event_id="evt_truncate"))
    truncated = await client.wait_for("conversation.item.truncated")
    assert {k: v for k, v in truncated.items() if k != "event_id"} == {
        "type": "conversation.item.truncated",
        "item_id": reply["id"],
        "content_index": 0,
        "audio_end_ms": 500,
    }
    client.send({"type": "conversation.item.retrieve", "item_id": reply["id"]})
    retrieved = await client.wait_for("conversation.item.retrieved")
    assert retrieved["item"]["content"][0] == {"type": "output_audio", "transcript": ""}
    # The item now holds 500 ms of audio: no more can be kept.
    client.send(truncate(reply["id"], 501, event_id="evt_longer"))
    error = await client.wait_for("error", where=lambda e: e["error"]["event_id"] == "evt_longer")
    assert error["error"]["param"] == "audio_end_ms"


async def test_bad_events_get_errors_and_the_call_survives(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    client.send_raw("{not json")
    client.send({"type": "response.teleport", "event_id": "evt_unknown"})
    client.send({"type": "conversation.item.create", "event_id": "evt_missing"})
    client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_extra",
            "item": {"type": "message", "role": "user", "content": []},
            "colour": "blue",
        }
    )
    client.send(
        {
            "type": "conversation.item.create",
            "event_id": "evt_call_id",
            "item": {"type": "function_call_output", "call_id": "call_nowhere", "output": "{}"},
        }
    )
    client.send({"type": "response.cancel", "event_id": "evt_nothing"})
    client.send(
        {
            "type": "response.create",
            "event_id": "evt_metadata",
            "response": {"metadata": {"topic": {"nested": "object"}}},
        }
    )
    client.send(
        {
            "type": "response.create",
            "event_id": "evt_voice",
            "response": {"audio": {"output": {"voice": "robot"}}},
        }
    )
    await client.wait_count("error", 8)
    errors = {e["error"]["event_id"]: e["error"] for e in client.events if e["type"] == "error"}
    assert errors[None]["code"] == "invalid_json"
    assert errors["evt_unknown"]["param"] == "type"
    assert errors["evt_missing"]["code"] == "missing_required_parameter"
    assert errors["evt_missing"]["param"] == "item"
    assert errors["evt_extra"]["code"] == "unknown_parameter"
    assert errors["evt_extra"]["param"] == "colour"
    assert errors["evt_call_id"]["param"] == "item.call_id"
    assert errors["evt_nothing"]["code"] == "response_cancel_not_active"
    assert errors["evt_metadata"]["param"] == "response.metadata.topic"
    assert errors["evt_voice"]["param"] == "response.audio.output.voice"
    assert all(e["type"] == "invalid_request_error" for e in errors.values())

    say_text(client, "show the next picture")
    done = await client.wait_for("response.done")
    assert done["response"]["output"][0]["name"] == "navigate_gallery"


async def test_deeply_nested_events_get_errors_and_the_call_survives(
    connect: Callable[..., Any],
) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    client.send_raw("[" * 2000 + "]" * 2000)  # 4 KB, too deep for json.loads
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(250):  # 7 KB, readable but too deep to keep
        schema = {"type": "object", "properties": {"a": schema}}
    client.send(
        {
            "type": "session.update",
            "event_id": "evt_deep",
            "session": {"type": "realtime", "tools": [{"name": "deep", "parameters": schema}]},
        }
    )
    client.send(
        {
            "type": "session.update",
            "event_id": "evt_after",
            "session": {"type": "realtime", "instructions": "Be brief."},
        }
    )
    updated = await client.wait_for("session.updated")
    assert updated["session"]["instructions"] == "Be brief."
    assert [tool["name"] for tool in updated["session"]["tools"]] == ["navigate_gallery"]
    errors = {e["error"]["event_id"]: e["error"] for e in client.events if e["type"] == "error"}
    assert errors[None]["code"] == "invalid_json"
    assert errors["evt_deep"]["code"] == "invalid_value"
    assert errors["evt_deep"]["param"] == "session.tools[0].parameters"


def user_message(
    text: str, *, parts: int = 1, event_id: str, item_id: str | None = None
) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "event_id": event_id,
        "item": {
            **({"id": item_id} if item_id else {}),
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text} for _ in range(parts)],
        },
    }


async def test_non_ascii_items_are_echoed_as_utf8(connect: Callable[..., Any]) -> None:
    client: RealtimeClient = await connect(audio={"input": {"turn_detection": None}})
    # 120 KB of UTF-8 as a browser's JSON.stringify sends it; escaped as \u00e9 the echo
    # would be 360 KB, past the 256 KB the client accepts per message.
    client.send_raw(
        json.dumps(user_message("é" * 20_000, parts=3, event_id="evt_big"), ensure_ascii=False)
    )
    added = await client.wait_for("conversation.item.added")
    assert [part["text"] for part in added["item"]["content"]] == ["é" * 20_000] * 3
    client.send({"type": "conversation.item.retrieve", "item_id": added["item"]["id"]})
    retrieved = await client.wait_for("conversation.item.retrieved")
    assert retrieved["item"] == added["item"]


def respond_to(input_items: Any, *, event_id: str, **response: Any) -> dict[str, Any]:
    return {
        "type": "response.create",
        "event_id": event_id,
        "response": {"input": input_items, **response},
    }


def reference(item_id: Any) -> dict[str, Any]:
    return {"type": "item_reference", "id": item_id}


async def test_a_response_reads_its_input_instead_of_the_conversation(
    connect: Callable[..., Any],
) -> None:
    """response.input used to be refused as an unknown parameter. A response given
    input reads those items (references to the conversation's, or new ones) instead
    of the conversation; new input items, and with conversation 'none' the response's
    output, stay out of the conversation."""
    client: RealtimeClient = await connect(
        output_modalities=["text"], audio={"input": {"turn_detection": None}}
    )
    client.send(user_message("show the next picture", event_id="evt_ask", item_id="ask_next"))
    # The latest turn is small talk, answered in words when the conversation is read.
    client.send(user_message("hello there", event_id="evt_hello", item_id="hello"))
    await client.wait_for("conversation.item.done", where=lambda e: e["item"]["id"] == "hello")

    mark = len(client.events)
    client.send(respond_to([reference("ask_next")], event_id="evt_oob", conversation="none"))
    done = await client.wait_for("response.done")
    assert done["response"]["conversation_id"] is None
    # Out of band: its output is announced as the response's, never as the conversation's.
    assert "response.output_item.added" in client.types(mark)
    assert not {"conversation.item.added", "conversation.item.done"} & set(client.types(mark))
    call = done["response"]["output"][0]
    assert call["type"] == "function_call"
    assert json.loads(call["arguments"]) == {"action": "next"}
    client.send({"type": "conversation.item.retrieve", "item_id": call["id"], "event_id": "evt_1"})
    error = await client.wait_for("error")
    assert (error["error"]["code"], error["error"]["event_id"]) == ("item_not_found", "evt_1")

    mark = len(client.events)
    inline = user_message("show the previous picture", event_id="-", item_id="inline_ask")["item"]
    client.send(respond_to([inline], event_id="evt_inline"))
    done = await client.wait_for("response.done", after=mark)
    call = done["response"]["output"][0]
    assert json.loads(call["arguments"]) == {"action": "previous"}
    client.send({"type": "conversation.item.retrieve", "item_id": call["id"]})
    assert (await client.wait_for("conversation.item.retrieved", after=mark))["item"] == call
    client.send(
        {"type": "conversation.item.retrieve", "item_id": "inline_ask", "event_id": "evt_2"}
    )
    error = await client.wait_for("error", after=mark)
    assert (error["error"]["code"], error["error"]["event_id"]) == ("item_not_found", "evt_2")

    # A tool's output given as input, after a reference to its call, is confirmed.
    mark = len(client.events)
    output = {
        "type": "function_call_output",
        "call_id": call["call_id"],
        "output": json.dumps({"ok": True, "title": "A red fox"}),
    }
    client.send(respond_to([reference(call["id"]), output], event_id="evt_output"))
    done = await client.wait_for("response.done", after=mark)
    assert "red fox" in done["response"]["output"][0]["content"][0]["text"].lower()
    assert "error" not in client.types(mark)


async def test_bad_response_input_gets_errors_and_the_call_survives(
    connect: Callable[..., Any],
) -> None:
    client: RealtimeClient = await connect(
        output_modalities=["text"], audio={"input": {"turn_detection": None}}
    )
    client.send(user_message("show the next picture", event_id="evt_ask", item_id="ask_next"))
    message = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    cases: dict[str, tuple[Any, str, str]] = {
        "evt_unknown": ([reference("nowhere")], "invalid_value", "response.input[0].id"),
        "evt_second": (
            [reference("ask_next"), reference("gone")],
            "invalid_value",
            "response.input[1].id",
        ),
        "evt_object": (reference("ask_next"), "invalid_type", "response.input"),
        "evt_no_id": (
            [{"type": "item_reference"}],
            "missing_required_parameter",
            "response.input[0].id",
        ),
        "evt_id_type": ([reference(7)], "invalid_type", "response.input[0].id"),
        "evt_extra": (
            [{**reference("ask_next"), "role": "user"}],
            "unknown_parameter",
            "response.input[0].role",
        ),
        "evt_string": (["ask_next"], "invalid_type", "response.input[0]"),
        "evt_kind": ([{"type": "audio"}], "invalid_value", "response.input[0].type"),
        "evt_role": ([{**message, "role": "robot"}], "invalid_value", "response.input[0].role"),
        "evt_taken_id": ([{**message, "id": "ask_next"}], "invalid_value", "response.input[0].id"),
        "evt_call_id": (
            [{"type": "function_call_output", "call_id": "call_nowhere", "output": "{}"}],
            "invalid_value",
            "response.input[0].call_id",
        ),
    }
    for event_id, (input_items, _, _) in cases.items():
        client.send(respond_to(input_items, event_id=event_id))
    await client.wait_count("error", len(cases))
    errors = {e["error"]["event_id"]: e["error"] for e in client.events if e["type"] == "error"}
    assert {key: (e["code"], e["param"]) for key, e in errors.items()} == {
        key: (code, param) for key, (_, code, param) in cases.items()
    }
    assert "response.created" not in client.types()
    assert "'nowhere'" in errors["evt_unknown"]["message"]

    client.send(respond_to([reference("ask_next")], event_id="evt_good"))
    done = await client.wait_for("response.done")
    assert json.loads(done["response"]["output"][0]["arguments"]) == {"action": "next"}


def _without_max_message_size(sdp: str) -> str:
    return "\r\n".join(
        line for line in sdp.split("\r\n") if not line.startswith("a=max-message-size:")
    )


def _any_message_size(sdp: str) -> str:
    return re.sub(r"^a=max-message-size:\d+", "a=max-message-size:0", sdp, flags=re.MULTILINE)


def user_message_of_bytes(size: int, *, event_id: str) -> str:
    """A user message of two-byte characters whose UTF-8 JSON is exactly `size` bytes."""
    parts = ["é" * 30_000 for _ in range(size // 60_000)] + [""]

    def encoded() -> str:
        event = user_message("", parts=len(parts), event_id=event_id)
        for part, text in zip(event["item"]["content"], parts, strict=True):
            part["text"] = text
        return json.dumps(event, ensure_ascii=False)

    missing = size - len(encoded().encode())
    parts[-1] = "é" * (missing // 2) + "x" * (missing % 2)
    text = encoded()
    assert len(text.encode()) == size
    return text


async def test_the_event_size_limit_counts_utf8_bytes(connect: Callable[..., Any]) -> None:
    """An event of two-byte characters used to pass the limit at up to twice its size:
    the length checked was in characters. The peer here sends past the 256 KB our SDP
    asks for, and accepts any size back, so the engine's own limit is what decides."""
    client: RealtimeClient = await connect(
        munge=_any_message_size,
        munge_answer=_any_message_size,
        audio={"input": {"turn_detection": None}},
    )
    over = user_message_of_bytes(MAX_CLIENT_EVENT_BYTES + 1, event_id="evt_over")
    assert len(over) < MAX_CLIENT_EVENT_BYTES
    client.send_raw(over)
    client.send_raw(user_message_of_bytes(MAX_CLIENT_EVENT_BYTES, event_id="evt_at"))
    added = await client.wait_for("conversation.item.added", timeout=30)
    assert len(json.dumps(added["item"], ensure_ascii=False).encode()) > 500_000
    # Refused unread, so the error cannot name the event's event_id.
    errors = [e["error"] for e in client.events if e["type"] == "error"]
    assert [(e["code"], e["event_id"]) for e in errors] == [("invalid_value", None)]
    assert f"at most {MAX_CLIENT_EVENT_BYTES} bytes" in errors[0]["message"]


async def test_an_item_the_peer_could_not_receive_back_is_refused(
    connect: Callable[..., Any],
) -> None:
    # A peer that does not declare its max-message-size accepts 64 KB (RFC 8841).
    client: RealtimeClient = await connect(
        munge=_without_max_message_size, audio={"input": {"turn_detection": None}}
    )
    client.send(user_message("x" * 30_000, parts=3, event_id="evt_too_big"))
    client.send(user_message("x" * 30_000, event_id="evt_fits"))
    added = await client.wait_for("conversation.item.added")
    assert added["item"]["content"][0]["text"] == "x" * 30_000
    error = await client.wait_for("error")
    assert error["error"]["event_id"] == "evt_too_big"
    assert error["error"]["param"] == "item"
    assert "65536 bytes" in error["error"]["message"]
    # The refused item is not in the conversation: the next item follows the one kept.
    client.send(user_message("hello", event_id="evt_next"))
    following = await client.wait_for(
        "conversation.item.added", where=lambda e: e["item"]["content"][0]["text"] == "hello"
    )
    assert following["previous_item_id"] == added["item"]["id"]


async def test_one_key_starts_one_call(engine_server: EngineServer) -> None:
    key = mint(engine_server)
    first, second = RealtimeClient(), RealtimeClient()
    try:
        assert (await first.connect(engine_server.engine_url, key)).status_code == 201
        refused = await second.connect(engine_server.engine_url, key)
        assert refused.status_code == 401
        assert refused.headers["Content-Type"].startswith("application/json")
        assert refused.json()["error"]["code"] == "invalid_client_secret"
        # The call's own key may hang it up.
        hung_up = httpx.post(
            f"{engine_server.engine_url}/realtime/calls/{first.call_id}/hangup",
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert hung_up.status_code == 200
    finally:
        await first.close()
        await second.close()


async def test_unknown_key_is_401(engine_server: EngineServer) -> None:
    for key in ("ek_not-a-real-key", engine_server.api_key):
        client = RealtimeClient()
        try:
            response = await client.connect(engine_server.engine_url, key)
        finally:
            await client.close()
        assert response.status_code == 401
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_capacity_is_capped(engine_server: EngineServer, tmp_path: Path) -> None:
    """The fixture's Daphne allows two calls; the third gets a 503 until one ends."""
    clients = [RealtimeClient() for _ in range(3)]
    try:
        for client in clients[:2]:
            response = await client.connect(engine_server.engine_url, mint(engine_server))
            assert response.status_code == 201, response.text
        refused = await clients[2].connect(engine_server.engine_url, mint(engine_server))
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "too_many_calls"
        hung_up = httpx.post(
            f"{engine_server.engine_url}/realtime/calls/{clients[0].call_id}/hangup",
            headers={"Authorization": f"Bearer {engine_server.api_key}"},
            timeout=10,
        )
        assert hung_up.status_code == 200
        again = RealtimeClient()
        clients.append(again)
        response = await again.connect(engine_server.engine_url, mint(engine_server))
        assert response.status_code == 201
    finally:
        for client in clients:
            await client.close()
            if client.call_id is not None:
                httpx.post(
                    f"{engine_server.engine_url}/realtime/calls/{client.call_id}/hangup",
                    headers={"Authorization": f"Bearer {engine_server.api_key}"},
                    timeout=10,
                )
