"""Spoken test recordings, made by the project itself.

How a recording is made:
1. The engine's own text-to-speech (``voice.engine.tts.Speaker``, eSpeak NG from the
   espeakng-loader wheel) speaks the text in one OpenAI voice name at one speed,
   giving mono s16le at 22050 Hz.
2. PyAV's resampler (the same library the engine uses on live calls) converts it to
   16 kHz mono s16le, the rate the voice activity detector and recogniser expect.
3. Silence is added before and after (``lead_ms``/``tail_ms``), as a caller pauses
   around a command.
4. Optionally, seeded background noise (white, or pink: 1/f, more like a room) is mixed
   in at a given signal-to-noise ratio, measured against the speech's RMS, over the
   whole clip including the silences.
5. Each take is rendered in a fresh process forked from a clean server process: eSpeak
   keeps state between syntheses that its seeds do not reset, so the same text said
   after other texts sounds slightly different. A fresh process makes every take
   byte-for-byte the same on every run, and the accuracy figure stable.
6. The result is written as a WAV file named by a hash of every parameter into a
   directory the caller gives (the test session's temp dir), so each distinct
   recording is synthesised once per session.

No system tools and no downloads: everything comes from the project's requirements.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import wave
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from voice.engine.tts import Speaker

RATE = 16_000


@dataclass(frozen=True)
class Take:
    """One way of saying a text: voice, speed, surrounding silence and noise."""

    text: str
    voice: str = "verse"
    speed: float = 1.0
    lead_ms: int = 400
    tail_ms: int = 800
    noise: str | None = None  # "white" or "pink"
    snr_db: float = 20.0
    seed: int = 0

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


def resample_to_16k(pcm: bytes, rate: int) -> bytes:
    """Mono s16le at ``rate`` → mono s16le at 16 kHz, through PyAV's resampler."""
    if rate == RATE:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype("<i2").tobytes()


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n)
        freqs[0] = freqs[1]
        return np.fft.irfft(spectrum / np.sqrt(freqs), n)
    raise ValueError(f"unknown noise kind {kind!r}")


def render(take: Take) -> bytes:
    """The take as 16 kHz mono s16le PCM."""
    pcm, rate = Speaker(voice=take.voice, speed=take.speed).synthesize(take.text)
    speech = np.frombuffer(resample_to_16k(pcm, rate), dtype="<i2").astype(np.float64)
    lead = np.zeros(RATE * take.lead_ms // 1000)
    tail = np.zeros(RATE * take.tail_ms // 1000)
    clip = np.concatenate([lead, speech, tail])
    if take.noise is not None:
        rng = np.random.default_rng(take.seed)
        noise = _noise(take.noise, len(clip), rng)
        voiced = speech[np.abs(speech) > 0.05 * np.abs(speech).max()]
        speech_rms = float(np.sqrt(np.mean(voiced**2)))
        noise *= speech_rms / float(np.sqrt(np.mean(noise**2))) / 10 ** (take.snr_db / 20)
        clip = clip + noise
    return np.clip(np.round(clip), -32768, 32767).astype("<i2").tobytes()


def render_fresh(take: Take) -> bytes:
    """:func:`render` in a new process that has synthesised nothing before."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(render, take).result()


def write_wav(path: Path, pcm: bytes, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def read_wav(path: Path) -> bytes:
    with wave.open(str(path), "rb") as src:
        return src.readframes(src.getnframes())


class Studio:
    """Makes takes on demand and keeps them as WAV files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    def path(self, take: Take) -> Path:
        path = self.directory / f"{take.key()}.wav"
        if not path.exists():
            write_wav(path, render_fresh(take))
        return path

    def pcm(self, take: Take) -> bytes:
        return read_wav(self.path(take))
