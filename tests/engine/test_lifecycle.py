"""How calls end and what they leave behind, with the engine in the test's own process.

The site's ASGI app runs in-process (httpx's ASGI transport) on the test's event loop,
where the engine's peers then live too, so the tests can look inside: the registry,
the peer and the asyncio tasks after a call ends, the voice a reply is spoken in.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from artterminal.asgi import application
from tests.engine.client import RealtimeClient
from tests.engine.server import NAVIGATE
from voice.engine import secrets, tts
from voice.engine.call import MAX_CONVERSATION_BYTES, MAX_CONVERSATION_ITEMS, Call
from voice.engine.registry import registry
from voice.engine.session import default_session

API_KEY = "engine-key-lifecycle-test"
ENGINE = "http://127.0.0.1/engine/v1"


@pytest.fixture(autouse=True)
def engine_settings(settings: Any) -> None:
    settings.ENGINE_API_KEY = API_KEY
    settings.ENGINE_MAX_CALLS = 4


@pytest.fixture
def transport() -> httpx.ASGITransport:
    return httpx.ASGITransport(app=application)


@pytest.fixture
async def http(transport: httpx.ASGITransport) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
async def no_calls_left() -> AsyncIterator[None]:
    yield
    for call in registry.calls():
        await call.close("test over")


async def mint(http: httpx.AsyncClient, **session: Any) -> str:
    response = await http.post(
        f"{ENGINE}/realtime/client_secrets",
        json={"session": {"type": "realtime", **session}},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    return value


async def offer(client: RealtimeClient) -> str:
    """The offer a browser makes: a microphone track and the events channel."""
    client.pc.addTrack(client.microphone)
    client.pc.createDataChannel("oai-events")
    await client.pc.setLocalDescription(await client.pc.createOffer())
    sdp: str = client.pc.localDescription.sdp
    return sdp


async def post_offer(http: httpx.AsyncClient, sdp: str, key: str) -> httpx.Response:
    return await http.post(
        f"{ENGINE}/realtime/calls",
        content=sdp.encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/sdp"},
    )


@pytest.fixture
async def connected(
    http: httpx.AsyncClient, transport: httpx.ASGITransport
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[RealtimeClient] = []

    async def connect(**session: Any) -> tuple[RealtimeClient, Call]:
        client = RealtimeClient()
        clients.append(client)
        response = await client.connect(ENGINE, await mint(http, **session), transport=transport)
        assert response.status_code == 201, response.text
        await client.wait_for("session.created", timeout=15)
        assert client.call_id is not None
        call = registry.get(client.call_id)
        assert call is not None
        return client, call

    yield connect
    for client in clients:
        await client.close()


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def call_tasks() -> list[asyncio.Task[Any]]:
    """Live asyncio tasks running the engine's call code."""
    return [
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().__qualname__.startswith("Call.")  # type: ignore[union-attr]
    ]


def freed(call: Call) -> bool:
    return (
        call.closed
        and registry.get(call.id) is None
        and len(registry) == 0
        and call.pc.connectionState == "closed"
        and not call.tasks
        and not call_tasks()
    )


async def test_hangup_frees_everything(
    connected: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    client, call = await connected(audio={"input": {"turn_detection": None}})
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            },
        }
    )
    client.send({"type": "response.create"})
    await client.wait_for("output_audio_buffer.started", timeout=15)
    assert call_tasks(), "a speaking call runs tasks"

    response = await http.post(
        f"{ENGINE}/realtime/calls/{call.id}/hangup",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200
    assert freed(call)
    assert call.close_reason == "hung up"
    assert not call.output.playing
    again = await http.post(
        f"{ENGINE}/realtime/calls/{call.id}/hangup",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "call_not_found"


async def test_hangup_needs_the_server_or_call_key(
    connected: Callable[..., Any], http: httpx.AsyncClient
) -> None:
    _, call = await connected()
    for header in ({}, {"Authorization": "Bearer ek_someone_else"}):
        response = await http.post(f"{ENGINE}/realtime/calls/{call.id}/hangup", headers=header)
        assert response.status_code == 401
    assert registry.get(call.id) is call


async def test_peer_closing_ends_the_call(connected: Callable[..., Any]) -> None:
    client, call = await connected()
    await client.close()
    await eventually(lambda: freed(call))


async def test_data_channel_closing_ends_the_call(connected: Callable[..., Any]) -> None:
    client, call = await connected()
    client.channel.close()
    await eventually(lambda: freed(call))
    assert call.close_reason == "data channel closed"


async def test_watchdog_frees_a_call_that_never_connects(
    http: httpx.AsyncClient, transport: httpx.ASGITransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "connect_timeout_seconds", 0.5)
    client = RealtimeClient()
    response = await post_offer(http, await offer(client), await mint(http))
    assert response.status_code == 201
    call_id = response.headers["Location"].rsplit("/", 1)[-1]
    call = registry.get(call_id)
    assert call is not None
    # The answer is never applied: the peer cannot connect.
    await eventually(lambda: freed(call), timeout=5)
    assert call.close_reason == "never connected"
    await client.close()


async def test_calls_end_at_the_time_limit(
    connected: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "max_call_seconds", 1.0)
    _, call = await connected()
    await eventually(lambda: freed(call), timeout=5)
    assert call.close_reason == "reached the call time limit"


async def test_expired_key_is_401(http: httpx.AsyncClient, transport: httpx.ASGITransport) -> None:
    secret = secrets.client_secret_create(session=default_session(), ttl_seconds=1)
    await asyncio.sleep(1.1)
    client = RealtimeClient()
    try:
        response = await client.connect(ENGINE, secret.value, transport=transport)
    finally:
        await client.close()
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_client_secret"
    assert len(registry) == 0


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


# Offers aiortc cannot read, each failing in a different place with a different exception.
MALFORMED_OFFERS: dict[str, Callable[[str], str]] = {
    "not a session description": lambda _: "v=0\r\nthis is not a session description\r\n",
    "no a=setup": lambda sdp: _without(sdp, "a=setup:"),
    "no a=mid on the audio": lambda sdp: _without(sdp, "a=mid:0"),
    "garbled m= line": lambda sdp: sdp.replace("m=audio ", "m=audio x y z\r\nx=", 1),
    "the offer twice": lambda sdp: sdp + sdp,
}


@pytest.mark.parametrize("malformation", list(MALFORMED_OFFERS))
async def test_malformed_offer_is_400_and_frees_its_slot(
    http: httpx.AsyncClient, malformation: str
) -> None:
    client = RealtimeClient()
    try:
        sdp = MALFORMED_OFFERS[malformation](await offer(client))
    finally:
        await client.close()
    response = await post_offer(http, sdp, await mint(http))
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "invalid_offer"
    assert error["param"] == "sdp"
    assert len(registry) == 0
    assert not call_tasks()


async def test_a_response_is_spoken_in_the_voice_it_asks_for(
    connected: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    spoken_in: list[str] = []
    synthesize = tts.Speaker.synthesize

    def recorded(speaker: tts.Speaker, text: str) -> tuple[bytes, int]:
        spoken_in.append(speaker.voice)
        return synthesize(speaker, text)

    monkeypatch.setattr(tts.Speaker, "synthesize", recorded)
    client, call = await connected(audio={"input": {"turn_detection": None}})
    assert call.session["audio"]["output"]["voice"] == "alloy"
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            },
        }
    )
    client.send({"type": "response.create", "response": {"audio": {"output": {"voice": "ash"}}}})
    done = await client.wait_for("response.done")
    assert done["response"]["audio"]["output"]["voice"] == "ash"
    client.send({"type": "response.create"})
    await client.wait_for(
        "response.done", where=lambda e: e["response"]["id"] != done["response"]["id"]
    )
    assert spoken_in == ["ash", "alloy"]


def text_item(text: str, *, item_id: str, parts: int = 1) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text} for _ in range(parts)],
        },
    }


async def fill(
    client: RealtimeClient, count: int, *, text: str = "hi", parts: int = 1, prefix: str
) -> None:
    """Add `count` user messages with ids `{prefix}_0`... and wait until the last is in."""
    for index in range(count):
        client.send(text_item(text, item_id=f"{prefix}_{index}", parts=parts))
    last = f"{prefix}_{count - 1}"
    await client.wait_for(
        "conversation.item.done", timeout=60, where=lambda e: e["item"]["id"] == last
    )


def kept_bytes(call: Call) -> int:
    return sum(len(json.dumps(item, ensure_ascii=False).encode()) for item in call._items)


async def test_the_conversation_keeps_its_newest_items(connected: Callable[..., Any]) -> None:
    """Items each within every limit no longer accumulate for the whole call: past
    MAX_CONVERSATION_ITEMS or MAX_CONVERSATION_BYTES the oldest go, and the tool flow
    goes on with the recent ones."""
    client, call = await connected(audio={"input": {"turn_detection": None}}, tools=[NAVIGATE])
    await fill(client, MAX_CONVERSATION_ITEMS + 20, prefix="small")
    assert len(call._items) == MAX_CONVERSATION_ITEMS
    assert [it["id"] for it in call._items[:2]] == ["small_20", "small_21"]
    client.send({"type": "conversation.item.retrieve", "item_id": "small_0", "event_id": "evt_old"})
    error = await client.wait_for("error")
    assert error["error"]["code"] == "item_not_found"
    assert error["error"]["event_id"] == "evt_old"

    # 90 KB messages (three parts of the longest text): 30 of them pass the byte bound.
    mark = len(client.events)
    await fill(client, 30, text="x" * 30_000, parts=3, prefix="large")
    assert "error" not in client.types(mark)
    assert MAX_CONVERSATION_BYTES - 100_000 < kept_bytes(call) <= MAX_CONVERSATION_BYTES
    assert call._items[-1]["id"] == "large_29"
    assert not any(it["id"] == "large_0" for it in call._items)

    mark = len(client.events)
    client.send(text_item("show the next picture", item_id="command"))
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=mark)
    call_item = done["response"]["output"][0]
    assert call_item["name"] == "navigate_gallery"
    mark = len(client.events)
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call_item["call_id"],
                "output": json.dumps({"ok": True, "title": "A red fox"}),
            },
        }
    )
    client.send({"type": "response.create"})
    confirmed = await client.wait_for("response.done", after=mark)
    assert "red fox" in confirmed["response"]["output"][0]["content"][0]["transcript"].lower()


async def test_a_retention_ratio_truncates_to_that_share(connected: Callable[..., Any]) -> None:
    client, call = await connected(
        audio={"input": {"turn_detection": None}},
        truncation={"type": "retention_ratio", "retention_ratio": 0.5},
    )
    await fill(client, MAX_CONVERSATION_ITEMS, prefix="item")
    assert len(call._items) == MAX_CONVERSATION_ITEMS
    client.send(text_item("one more", item_id="one_more"))
    await client.wait_for("conversation.item.done", where=lambda e: e["item"]["id"] == "one_more")
    assert len(call._items) == MAX_CONVERSATION_ITEMS // 2
    assert call._items[-1]["id"] == "one_more"
