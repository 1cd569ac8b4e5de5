"""The assistant's voice leaves the engine as Opus packets the track encodes itself:
silence as one prepared packet, speech encoded on the wall clock's 20 ms grid."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pytest

from voice.engine import audio


def _decoder() -> av.AudioCodecContext:
    # As the browser (and aiortc's receiver) decode an "opus/48000/2" stream.
    decoder = av.AudioCodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "stereo"
    decoder.sample_rate = audio.OUTPUT_RATE
    return decoder


def _decode(decoder: av.AudioCodecContext, payload: bytes) -> np.ndarray:
    frames = decoder.decode(av.Packet(payload))
    return np.concatenate([frame.to_ndarray().reshape(-1, 2)[:, 0] for frame in frames])


def _tone(seconds: float, rate: int, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


async def _packets(track: audio.OutgoingAudioTrack, count: int) -> list[av.Packet]:
    """The next `count` packets, on the track's own clock (20 ms each)."""
    return [await track.recv() for _ in range(count)]


def test_the_prepared_silence_decodes_to_silence() -> None:
    decoder = _decoder()
    for _ in range(3):
        samples = _decode(decoder, audio.SILENT_PACKET)
        assert len(samples) == audio.FRAME_SAMPLES
        assert not samples.any()


async def test_an_idle_track_sends_silence_on_a_steady_clock() -> None:
    track = audio.OutgoingAudioTrack()
    packets = await _packets(track, 10)
    assert [bytes(packet) for packet in packets] == [audio.SILENT_PACKET] * 10
    assert [packet.pts for packet in packets] == [n * audio.FRAME_SAMPLES for n in range(10)]
    assert all(packet.time_base == audio._TIME_BASE for packet in packets)


async def test_speech_is_encoded_and_heard_then_silence_returns() -> None:
    track = audio.OutgoingAudioTrack()
    playback = track.play(_tone(0.5, 24_000), 24_000)  # 25 packets of speech
    packets = await _packets(track, 60)
    assert playback.started.is_set() and playback.finished.is_set()

    payloads = [bytes(packet) for packet in packets]
    assert all(payload != audio.SILENT_PACKET for payload in payloads[:25])
    # The encoder plays out its look-ahead and settles, then the prepared packet.
    assert payloads[25 + audio._TAIL_FRAMES :] == [audio.SILENT_PACKET] * (
        60 - 25 - audio._TAIL_FRAMES
    )
    # One packet per 20 ms, whichever kind: the browser's clock never jumps.
    assert [packet.pts for packet in packets] == [n * audio.FRAME_SAMPLES for n in range(60)]

    decoder = _decoder()
    decoded = np.concatenate([_decode(decoder, payload) for payload in payloads])
    heard = decoded[960 * 2 : 960 * 24].astype(float)
    assert np.sqrt(np.mean(heard**2)) > 3000  # the 8000-peak tone, not silence
    # A 440 Hz tone comes back as one: its spectrum peaks there.
    spectrum = np.abs(np.fft.rfft(heard))
    peak_hz = np.argmax(spectrum) * audio.OUTPUT_RATE / len(heard)
    assert peak_hz == pytest.approx(440, abs=5)
    assert not decoded[960 * (25 + audio._TAIL_FRAMES) :].any()


async def test_clear_cuts_the_speech_off_at_the_next_packet() -> None:
    track = audio.OutgoingAudioTrack()
    playback = track.play(_tone(1.0, 24_000), 24_000)
    spoken = await _packets(track, 5)
    assert track.clear() is True
    assert playback.cleared and playback.finished.is_set()
    rest = [bytes(packet) for packet in await _packets(track, 5 + audio._TAIL_FRAMES)]
    assert all(bytes(packet) != audio.SILENT_PACKET for packet in spoken)
    assert rest[audio._TAIL_FRAMES :] == [audio.SILENT_PACKET] * 5


async def test_a_stopped_track_ends_the_stream() -> None:
    track = audio.OutgoingAudioTrack()
    track.stop()
    with pytest.raises(audio.MediaStreamError):
        await asyncio.wait_for(track.recv(), 1)
