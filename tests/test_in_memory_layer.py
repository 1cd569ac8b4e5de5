"""The project's in-memory channel layer keeps the stock layer's promises, cheaply."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.exceptions import ChannelFull

from artterminal.layers import InMemoryChannelLayer


async def _members(layer: InMemoryChannelLayer, group: str, count: int) -> list[str]:
    channels = [await layer.new_channel() for _ in range(count)]
    for channel in channels:
        await layer.group_add(group, channel)
    return channels


async def test_a_group_message_reaches_every_member_as_its_own_copy() -> None:
    layer = InMemoryChannelLayer()
    channels = await _members(layer, "terminal-1", 50)
    message: dict[str, Any] = {"type": "terminal.state", "version": 3, "image": {"id": 7}}
    await layer.group_send("terminal-1", message)
    received = [await layer.receive(channel) for channel in channels]
    assert all(got == message for got in received)
    received[0]["image"]["id"] = 8  # a receiver changing its copy changes nobody else's
    assert received[1]["image"]["id"] == 7 and message["image"]["id"] == 7
    assert layer.channels == {}  # drained channels keep no queue


async def test_messages_arrive_in_order() -> None:
    layer = InMemoryChannelLayer()
    [channel] = await _members(layer, "terminal-1", 1)
    for version in range(5):
        await layer.group_send("terminal-1", {"type": "terminal.state", "version": version})
    assert [(await layer.receive(channel))["version"] for _ in range(5)] == list(range(5))


async def test_a_full_member_misses_the_message_and_the_others_do_not() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    slow, fast = await _members(layer, "terminal-1", 2)
    for version in range(2):
        await layer.send(slow, {"type": "terminal.state", "version": version})
    await layer.group_send("terminal-1", {"type": "terminal.state", "version": 9})
    assert (await layer.receive(fast))["version"] == 9
    assert [(await layer.receive(slow))["version"] for _ in range(2)] == [0, 1]
    with pytest.raises(ChannelFull):
        for version in range(3):
            await layer.send(slow, {"type": "x", "version": version})


async def test_expired_messages_and_their_channels_are_swept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = {"now": 1000.0}
    # One clock for both layers' wall time and the sweep's timer (the time module's).
    monkeypatch.setattr("time.time", lambda: clock["now"])
    monkeypatch.setattr("time.monotonic", lambda: clock["now"])
    layer = InMemoryChannelLayer(expiry=1)
    gone, alive = await _members(layer, "terminal-1", 2)
    await layer.send(gone, {"type": "terminal.state", "version": 2})  # expires at 1001
    clock["now"] += 5
    await layer.group_send("terminal-1", {"type": "terminal.state", "version": 3})
    # The channel whose messages expired unread left the group, as with the stock layer.
    assert gone not in layer.groups["terminal-1"]
    assert (await layer.receive(alive))["version"] == 3


async def test_sweeps_run_at_most_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    layer = InMemoryChannelLayer()
    sweeps: list[Any] = []
    original = InMemoryChannelLayer.__mro__[1]._clean_expired
    monkeypatch.setattr(
        InMemoryChannelLayer.__mro__[1], "_clean_expired", lambda self: sweeps.append(original)
    )
    channels = await _members(layer, "terminal-1", 20)
    for _ in range(10):
        await layer.group_send("terminal-1", {"type": "terminal.state"})
        await asyncio.gather(*(layer.receive(channel) for channel in channels))
    assert len(sweeps) == 1  # 10 sends and 200 receives within a second: one sweep
