"""Turn detection for the built-in engine: where an utterance starts and stops.

webrtcvad classifies 30 ms frames of 16 kHz mono s16le audio. Two extra gates keep
steady background noise from holding a turn open: an absolute energy floor and a
noise floor that tracks the quietest recent frames. The session's ``threshold`` (0..1)
raises all three: webrtcvad's aggressiveness, the absolute floor and the margin over
the noise floor.

Times follow the Realtime protocol: milliseconds from the first byte fed.
``audio_start_ms`` includes the prefix padding; ``audio_end_ms`` is when the silence
that ended the turn was complete (so it includes ``silence_duration_ms``).

Part-way through that silence the detector reports a pause (``SpeechPaused``) with the
speech so far, so the engine can start recognising it before the turn is over. If the
silence holds, the turn's ``speech`` is exactly that audio and the early result stands;
if the speaker goes on, the pause is forgotten and the turn's speech runs to its end.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import webrtcvad

SAMPLE_RATE = 16_000
FRAME_MS = 30
BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
FRAME_BYTES = FRAME_MS * BYTES_PER_MS
# A turn starts once this many of the last few frames are voiced: a click or a
# single noisy frame does not open a turn.
_ONSET_WINDOW = 4
_ONSET_VOICED = 3
# Until the background is known (_FLOOR_MIN_FRAMES audible frames), webrtcvad alone
# judges each frame, and it calls the first few frames of any sound after silence
# speech: a turn then needs a longer run of voice. Its start is not delayed by that,
# only the moment it is announced.
_ONSET_WINDOW_UNKNOWN_FLOOR = 8
_ONSET_VOICED_UNKNOWN_FLOOR = 6
# The longest turn: speech that never pauses long enough is ended here as if the
# silence had come, so one utterance cannot grow for the whole call, and its
# recognition takes bounded time. A speaker who goes on starts the next turn.
MAX_TURN_MS = 30_000
# Audio held while nobody speaks, so a manual commit (turn detection off) still has
# the whole buffer; older audio is dropped to bound memory.
_MAX_BUFFER_MS = 60_000
# The noise floor is a low percentile of the recent frames' energy: long enough a
# window that it spans the pauses between words, so it settles on the background.
_FLOOR_WINDOW = 100
_FLOOR_PERCENTILE = 10
_FLOOR_MIN_FRAMES = 10
# A pause is reported this long before the silence would end the turn (but no earlier
# than half-way into it): more than speech-to-text needs, so its result is ready when
# the turn ends, without guessing at every short gap between words.
_PAUSE_AHEAD_MS = 300


@dataclass(frozen=True)
class SpeechStarted:
    audio_start_ms: int


@dataclass(frozen=True)
class SpeechPaused:
    """The speaker has been silent for a while; the turn may be about to end."""

    audio_ms: int
    speech: bytes  # the turn so far, 16 kHz mono s16le, incl. prefix padding


@dataclass(frozen=True)
class SpeechStopped:
    audio_end_ms: int
    audio: bytes  # the utterance, 16 kHz mono s16le, incl. prefix padding
    # What to recognise: the audio up to the turn's last pause when the silence held
    # from there (the same bytes as that SpeechPaused's), else the whole utterance.
    speech: bytes


TurnEvent = SpeechStarted | SpeechPaused | SpeechStopped


class VoiceActivityDetector:
    """Feeds on a stream of audio and reports where each spoken turn starts and stops."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
    ) -> None:
        threshold = min(1.0, max(0.0, float(threshold)))
        self._vad = webrtcvad.Vad(min(3, int(threshold * 4)))
        # -70 dBFS at threshold 0, -30 dBFS at 1: the quietest frame that may count as voice.
        self._min_rms = 32768.0 * 10 ** ((-70.0 + 40.0 * threshold) / 20.0)
        # Voice must stand this far above the noise floor (3 dB at 0, 6 dB at 0.5, 8 dB at 1).
        self._noise_margin = 1.4 + 1.2 * threshold
        self.prefix_padding_ms = max(0, int(prefix_padding_ms))
        self.silence_duration_ms = max(FRAME_MS, int(silence_duration_ms))
        self.pause_ms = max(
            self.silence_duration_ms // 2, self.silence_duration_ms - _PAUSE_AHEAD_MS
        )
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._partial = b""
        self._buffer = bytearray()  # audio since the last turn boundary
        self._buffer_start_ms = getattr(self, "_position_ms", 0)
        self._position_ms = self._buffer_start_ms
        self._recent: deque[tuple[int, bool]] = deque(maxlen=_ONSET_WINDOW_UNKNOWN_FLOOR)
        self._speaking = False
        self._start_ms = 0
        self._silence_ms = 0
        self._paused: SpeechPaused | None = None
        self._energies: deque[float] = deque(maxlen=_FLOOR_WINDOW)

    @property
    def position_ms(self) -> int:
        """How much audio has been judged, in ms from the first byte fed."""
        return self._position_ms

    @property
    def speaking(self) -> bool:
        return self._speaking

    def feed(self, pcm: bytes) -> list[TurnEvent]:
        """Take more audio (any length); returns the turn events it completed, in order."""
        data = self._partial + pcm
        whole = len(data) - len(data) % FRAME_BYTES
        self._partial = data[whole:]
        events: list[TurnEvent] = []
        for offset in range(0, whole, FRAME_BYTES):
            event = self._frame(data[offset : offset + FRAME_BYTES])
            if event is not None:
                events.append(event)
        return events

    def commit(self) -> SpeechStopped | None:
        """End the current turn now (``input_audio_buffer.commit``); None if nothing buffered."""
        if self._partial:
            self._buffer += self._partial
            self._position_ms += len(self._partial) // BYTES_PER_MS
            self._partial = b""
        if not self._buffer:
            return None
        start = self._start_ms if self._speaking else self._buffer_start_ms
        self._paused = None  # ended by hand: everything buffered is the turn
        return self._stop(start)

    def clear(self) -> None:
        """Drop buffered audio and any turn in progress (``input_audio_buffer.clear``)."""
        self._position_ms += len(self._partial) // BYTES_PER_MS
        self._reset_stream()

    def _is_voiced(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.int64)
        # Exact: the sum of 480 squared samples fits an int64 and a float64 alike.
        rms = math.sqrt(float(np.dot(samples, samples)) / len(samples))
        # webrtcvad adapts to the background from every frame it sees, so it must see
        # every frame, loud or not.
        speech = bool(self._vad.is_speech(frame, SAMPLE_RATE))
        if rms < self._min_rms:
            # Too quiet to be voice; kept out of the floor, or a digitally silent
            # stretch would set it to zero and let the next steady hiss through.
            return False
        self._energies.append(rms)
        if not speech:
            return False
        if len(self._energies) < _FLOOR_MIN_FRAMES:
            # Too few audible frames to know the background (speech straight after a
            # quiet room): a floor made of the first word's own frames would cut it.
            return True
        return rms >= _noise_floor(self._energies) * self._noise_margin

    def _frame(self, frame: bytes) -> TurnEvent | None:
        frame_start = self._position_ms
        voiced = self._is_voiced(frame)
        self._buffer += frame
        self._position_ms += FRAME_MS
        if self._speaking:
            if voiced:
                self._silence_ms = 0
                self._paused = None
            else:
                self._silence_ms += FRAME_MS
            if (
                self._silence_ms >= self.silence_duration_ms
                or self._position_ms - self._start_ms >= MAX_TURN_MS
            ):
                return self._stop(self._start_ms)
            if not voiced and self._paused is None and self._silence_ms >= self.pause_ms:
                self._paused = SpeechPaused(
                    audio_ms=self._position_ms, speech=self._turn_audio(self._start_ms)
                )
                return self._paused
            return None
        self._recent.append((frame_start, voiced))
        if len(self._energies) >= _FLOOR_MIN_FRAMES:
            window = list(self._recent)[-_ONSET_WINDOW:]
            needed = _ONSET_VOICED
        else:
            window, needed = list(self._recent), _ONSET_VOICED_UNKNOWN_FLOOR
        if sum(v for _, v in window) >= needed:
            onset = next(ms for ms, v in window if v)
            self._speaking = True
            self._silence_ms = 0
            self._start_ms = max(self._buffer_start_ms, onset - self.prefix_padding_ms)
            # The turn's audio is all a commit or a stop reads from now on.
            del self._buffer[: (self._start_ms - self._buffer_start_ms) * BYTES_PER_MS]
            self._buffer_start_ms = self._start_ms
            self._recent.clear()
            return SpeechStarted(audio_start_ms=self._start_ms)
        self._trim_idle_buffer()
        return None

    def _trim_idle_buffer(self) -> None:
        excess_ms = self._position_ms - self._buffer_start_ms - _MAX_BUFFER_MS
        if excess_ms > 0:
            del self._buffer[: excess_ms * BYTES_PER_MS]
            self._buffer_start_ms += excess_ms

    def _turn_audio(self, start_ms: int) -> bytes:
        return bytes(self._buffer[(start_ms - self._buffer_start_ms) * BYTES_PER_MS :])

    def _stop(self, start_ms: int) -> SpeechStopped:
        audio = self._turn_audio(start_ms)
        speech = self._paused.speech if self._paused is not None else audio
        self._paused = None
        end_ms = self._position_ms
        self._buffer = bytearray()
        self._buffer_start_ms = end_ms
        self._speaking = False
        self._silence_ms = 0
        self._recent.clear()
        return SpeechStopped(audio_end_ms=end_ms, audio=audio, speech=speech)


def _noise_floor(energies: Collection[float]) -> float:
    """The _FLOOR_PERCENTILE-th percentile of the recent frames' energy, interpolated
    linearly as NumPy's default does: read only for frames webrtcvad calls speech, in
    plain Python, which for a hundred values is several times quicker than
    np.percentile and its conversion of the deque (make bench --only calls, py-spy)."""
    ordered = sorted(energies)
    rank = (len(ordered) - 1) * _FLOOR_PERCENTILE / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)
