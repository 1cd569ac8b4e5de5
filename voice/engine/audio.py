"""Audio between a WebRTC peer and the speech core.

In: aiortc decodes Opus to 48 kHz stereo s16; the speech core wants 16 kHz mono s16le.
Out: the speech core's PCM becomes 20 ms frames on a track paced to the wall clock,
silence when idle, so the browser hears a steady stream and a clear stops it at once.
Each direction keeps one stateful resampler: a fresh one per frame clicks at every
frame boundary.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import math
import time
from typing import Any

import av
import numpy as np
from aiortc import rtp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

SPEECH_RATE = 16_000
OUTPUT_RATE = 48_000
FRAME_SAMPLES = OUTPUT_RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
_TIME_BASE = fractions.Fraction(1, OUTPUT_RATE)


# aiortc's receiver holds four complete 20 ms packets of audio before it decodes the
# oldest (prefetch 4): 80 ms added to the end of every turn. The hold buys nothing for
# speech: a packet that arrives out of order waits for its predecessor with any
# prefetch, and a lost one stalls the buffer until it fills either way. One packet, the
# least the buffer works with (it knows a frame is whole when the next one starts).
AUDIO_PREFETCH_PACKETS = 1
# Where aiortc's RTCRtpReceiver keeps its jitter buffer (a private, name-mangled field).
_JITTER_BUFFER_FIELD = "_RTCRtpReceiver__jitter_buffer"


def shorten_jitter_buffer(receiver: Any) -> bool:
    """Give an audio receiver a jitter buffer that holds one packet instead of four.

    Call it before media flows (after setRemoteDescription). False, with a warning,
    when this aiortc keeps its buffer elsewhere: calls still work, 60 ms slower."""
    current = getattr(receiver, _JITTER_BUFFER_FIELD, None)
    if not isinstance(current, JitterBuffer):
        logger.warning("aiortc's audio jitter buffer was not found; turns end 60 ms later")
        return False
    setattr(
        receiver,
        _JITTER_BUFFER_FIELD,
        JitterBuffer(capacity=current.capacity, prefetch=AUDIO_PREFETCH_PACKETS),
    )
    return True


def audio_level_dbov(frame: av.AudioFrame) -> int:
    """RFC 6465's audio level of a frame (0 loudest, -127 silent), as aiortc computes it
    for the header of every audio packet it sends, over the same bytes, with NumPy.

    aiortc sums the squares of the frame's samples in a Python loop: with eight calls
    that was 15% of the event loop (make bench --only calls, py-spy), which then fell
    behind the calls' audio. The result is the same integer (tests/engine)."""
    samples = np.frombuffer(bytes(frame.planes[0]), dtype=np.int16).astype(np.int64)
    energy = float(np.dot(samples, samples))
    rms = math.sqrt(energy / (frame.samples * 32767 * 32767))
    if rms <= 0:
        return -127
    return round(min(max(20 * math.log10(rms), -127), 0))


# aiortc's own, kept to compare against. Every RTCRtpSender of the process looks the
# function up in aiortc.rtp for each packet, so replacing it there is enough.
aiortc_audio_level_dbov = rtp.compute_audio_level_dbov
rtp.compute_audio_level_dbov = audio_level_dbov


def _frame_bytes(frames: list[av.AudioFrame]) -> bytes:
    return b"".join(frame.to_ndarray().tobytes() for frame in frames)


class InboundAudio:
    """Turns the peer's decoded frames into 16 kHz mono s16le for VAD and STT."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SPEECH_RATE)

    def convert(self, frame: av.AudioFrame) -> bytes:
        # Timestamps with gaps (lost packets) would make the resampler pad or drop;
        # the speech core wants the audio that arrived, in order.
        frame.pts = None
        return _frame_bytes(self._resampler.resample(frame))


class Playback:
    """One stretch of queued speech: when it started playing and when it ended."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.finished = asyncio.Event()
        self.cleared = False


class OutgoingAudioTrack(MediaStreamTrack):
    """The assistant's voice: queued PCM in 20 ms frames on the wall clock, else silence."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._resampler: av.AudioResampler | None = None
        self._resampler_rate = 0
        self._playback: Playback | None = None
        self._start: float | None = None
        self._pts = 0

    def play(self, pcm: bytes, sample_rate: int) -> Playback:
        """Queue mono s16le speech; the returned Playback reports start and end."""
        if self._resampler is None or sample_rate != self._resampler_rate:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=OUTPUT_RATE)
            self._resampler_rate = sample_rate
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        self._buffer.extend(_frame_bytes(self._resampler.resample(frame)))
        if self._playback is not None and not self._playback.finished.is_set():
            self._playback.finished.set()
        playback = Playback()
        self._playback = playback
        if not self._buffer:
            playback.started.set()
            playback.finished.set()
        return playback

    def clear(self) -> bool:
        """Drop every unplayed sample now; True when speech was cut off."""
        had_audio = bool(self._buffer)
        self._buffer.clear()
        playback, self._playback = self._playback, None
        if playback is not None and not playback.finished.is_set():
            playback.cleared = True
            playback.finished.set()
            return True
        return had_audio

    @property
    def playing(self) -> bool:
        return bool(self._buffer)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            delay = self._start + self._pts / OUTPUT_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.2:
                # The sender stalled (a busy loop): resume from now rather than burst.
                self._start = time.monotonic() - self._pts / OUTPUT_RATE
        chunk = bytes(self._buffer[:FRAME_BYTES])
        del self._buffer[:FRAME_BYTES]
        playback = self._playback
        if playback is not None:
            if chunk:
                playback.started.set()
            if not self._buffer and not chunk:
                playback.finished.set()
                self._playback = None
        frame = av.AudioFrame.from_ndarray(
            np.frombuffer(chunk.ljust(FRAME_BYTES, b"\0"), dtype="<i2").reshape(1, -1),
            format="s16",
            layout="mono",
        )
        frame.sample_rate = OUTPUT_RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame

    def stop(self) -> None:
        self.clear()
        super().stop()
