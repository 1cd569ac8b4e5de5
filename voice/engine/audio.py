"""Audio between a WebRTC peer and the speech core.

In: aiortc decodes Opus to 48 kHz stereo s16; the speech core wants 16 kHz mono s16le.
Out: the speech core's PCM becomes 20 ms Opus packets on a track paced to the wall
clock, silence when idle, so the browser hears a steady stream and a clear stops it at
once. Each direction keeps one stateful resampler: a fresh one per frame clicks at every
frame boundary.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from typing import Any

import av
import numpy as np
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

logger = logging.getLogger(__name__)

SPEECH_RATE = 16_000
OUTPUT_RATE = 48_000
FRAME_SAMPLES = OUTPUT_RATE // 50  # 20 ms
FRAME_BYTES = FRAME_SAMPLES * 2
_TIME_BASE = fractions.Fraction(1, OUTPUT_RATE)
# Mono speech; "opus/48000/2" in the SDP only names the codec, and every packet says
# how many channels it holds. aiortc's own encoder sends stereo at 96 kb/s.
OPUS_BIT_RATE = 48_000
# After speech the call's encoder goes on through this much silence before the
# prepared silent packet takes over: the encoder's look-ahead (6.5 ms) is played out
# and it has settled on silence itself (it does within about six frames).
_TAIL_FRAMES = 8


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


def _opus_encoder() -> av.AudioCodecContext:
    codec = av.AudioCodecContext.create("libopus", "w")
    codec.bit_rate = OPUS_BIT_RATE
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = OUTPUT_RATE
    codec.time_base = _TIME_BASE
    codec.options = {"application": "voip"}
    return codec


def _pcm_frame(chunk: bytes) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        np.frombuffer(chunk, dtype="<i2").reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = OUTPUT_RATE
    return frame


# 20 ms of silence in Opus (RFC 6716): a CELT-only fullband 20 ms frame, mono (TOC
# 0xf8), whose range-coded bits say "silence". libopus ends speech on this very packet.
SILENT_PACKET = b"\xf8\xff\xfe"


class OutgoingAudioTrack(MediaStreamTrack):
    """The assistant's voice: queued PCM as 20 ms Opus packets on the wall clock, else
    silence.

    The track hands aiortc packets it encoded itself, which aiortc sends as they are.
    Left to aiortc, every 20 ms of every call, silence included, became a frame to
    measure, resample and encode in a worker thread: at eight to twelve calls a sixth
    of the engine's event loop, most of it the hop to and from that thread (make bench
    --only calls, py-spy). Silence is now one prepared packet; speech is encoded here
    on the loop, which for 20 ms of mono audio costs less than the hop did.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._buffer = bytearray()
        self._resampler: av.AudioResampler | None = None
        self._resampler_rate = 0
        self._playback: Playback | None = None
        self._start: float | None = None
        self._pts = 0
        self._encoder: av.AudioCodecContext | None = None
        self._tail = 0  # silent frames the encoder still has to encode after speech

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

    async def recv(self) -> av.Packet:
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
        packet = av.Packet(self._encode(chunk))
        packet.pts = self._pts
        packet.time_base = _TIME_BASE
        return packet

    def _encode(self, chunk: bytes) -> bytes:
        """One 20 ms Opus packet: `chunk` of speech (short at its end), else silence."""
        if chunk:
            self._tail = _TAIL_FRAMES
        elif self._tail == 0:
            return SILENT_PACKET
        else:
            self._tail -= 1
        if self._encoder is None:
            self._encoder = _opus_encoder()
        # libopus answers each whole frame with one packet; its own timestamps (shifted
        # by the look-ahead) are not used, the track's clock is.
        packets = self._encoder.encode(_pcm_frame(chunk.ljust(FRAME_BYTES, b"\0")))
        return bytes(packets[-1]) if packets else SILENT_PACKET

    def stop(self) -> None:
        self.clear()
        super().stop()
