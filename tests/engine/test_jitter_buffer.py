"""The engine's audio receivers decode each packet as soon as the next one arrives."""

from __future__ import annotations

import logging

import pytest
from aiortc import RTCPeerConnection

from voice.engine.audio import AUDIO_PREFETCH_PACKETS, shorten_jitter_buffer


async def test_an_audio_receiver_holds_one_packet_instead_of_four() -> None:
    caller, engine = RTCPeerConnection(), RTCPeerConnection()
    try:
        caller.addTransceiver("audio")
        await caller.setLocalDescription(await caller.createOffer())
        await engine.setRemoteDescription(caller.localDescription)
        receiver = engine.getTransceivers()[0].receiver
        # Fails loudly if an aiortc upgrade moves the buffer: calls would be 60 ms slower.
        assert shorten_jitter_buffer(receiver)
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert buffer._prefetch == AUDIO_PREFETCH_PACKETS == 1
        assert buffer.capacity == 16
    finally:
        await caller.close()
        await engine.close()


def test_a_receiver_without_the_buffer_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="voice.engine.audio"):
        assert not shorten_jitter_buffer(object())
    assert "jitter buffer was not found" in caplog.text
