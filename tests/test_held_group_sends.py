"""Broadcasts made on the database thread can wait for the caller on the event loop to
send them (artterminal.layers.group_sends_held): in order, and none lost to a failure."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from artterminal.layers import (
    HeldMessage,
    group_send_held,
    group_send_or_warn,
    group_sends_held,
)

logger = logging.getLogger("tests.held")


async def _listen(group: str) -> tuple[Any, str]:
    layer: Any = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    return layer, channel


async def _received(layer: Any, channel: str) -> list[int]:
    numbers: list[int] = []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), 0.2)
        except TimeoutError:
            return numbers
        numbers.append(message["n"])


async def test_held_messages_wait_for_the_caller_then_go_in_order() -> None:
    layer, channel = await _listen("held")
    held: list[HeldMessage] = []

    def on_the_database_thread() -> None:
        with group_sends_held(held):
            for n in range(3):
                assert group_send_or_warn("held", {"type": "x", "n": n}, logger=logger)
        # Outside the block, sends go straight out again.
        group_send_or_warn("held", {"type": "x", "n": 99}, logger=logger)

    await database_sync_to_async(on_the_database_thread)()
    assert await _received(layer, channel) == [99]
    assert [message.message["n"] for message in held] == [0, 1, 2]

    await group_send_held(held)
    assert held == []
    assert await _received(layer, channel) == [0, 1, 2]


async def test_a_failing_send_is_a_warning_and_the_rest_still_go(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    layer, channel = await _listen("held")
    original = layer.group_send

    async def group_send(group: str, message: dict[str, Any]) -> None:
        if message["n"] == 1:
            raise ConnectionError("the channel layer went away")
        await original(group, message)

    monkeypatch.setattr(layer, "group_send", group_send)
    held = [HeldMessage("held", {"type": "x", "n": n}, logger) for n in range(3)]
    with caplog.at_level("WARNING", logger="tests.held"):
        await group_send_held(held)
    assert await _received(layer, channel) == [0, 2]
    [warning] = caplog.records
    assert "channel layer failed" in warning.getMessage()
