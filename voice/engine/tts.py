"""Text-to-speech for the built-in engine: eSpeak NG through the espeakng-loader wheel.

The wheel ships ``libespeak-ng.so`` and its data directory, so nothing comes from the
system. eSpeak keeps one global synthesizer (voice, rate, callback), so every call runs
under one module lock; output is mono s16le at eSpeak's native rate (22050 Hz).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any

import espeakng_loader

# espeak_AUDIO_OUTPUT: hand samples to the callback and return when synthesis is done.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_EE_OK = 0
_RANDOM_SEED = 1

# eSpeak's default speaking rate in words per minute; OpenAI's speed 1.0 maps onto it.
_BASE_RATE_WPM = 175
_MIN_RATE_WPM = 80
_MAX_RATE_WPM = 450

# OpenAI Realtime voice names → eSpeak NG voice + variant and base pitch (0-100, eSpeak's
# default 50). Distinct timbres so a listener (and the tests) can tell the voices apart.
VOICES: dict[str, tuple[str, int]] = {
    "alloy": ("en-us+f3", 50),
    "ash": ("en-us+m3", 50),
    "ballad": ("en-us+m5", 50),
    "coral": ("en-us+f2", 50),
    "echo": ("en-us+m1", 50),
    "sage": ("en-us+f2", 35),
    "shimmer": ("en-us+f5", 70),
    "verse": ("en-us+m2", 50),
    "marin": ("en-us+f5", 50),
    "cedar": ("en-us+m7", 50),
}
DEFAULT_VOICE = "verse"

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

_lock = threading.Lock()
_libc = ctypes.CDLL(None)
_lib: Any = None
_sample_rate = 0
_chunks: list[bytes] = []


@_SynthCallback
def _on_samples(wav: Any, numsamples: int, _events: int) -> int:
    if wav and numsamples > 0:
        _chunks.append(ctypes.string_at(wav, numsamples * 2))
    return 0  # 0 = keep synthesising


class SpeechError(RuntimeError):
    """eSpeak NG could not be loaded or refused to synthesise."""


def _library() -> Any:
    """Load and initialise eSpeak NG once per process; the caller holds ``_lock``."""
    global _lib, _sample_rate
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data_path = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        raise SpeechError(f"eSpeak NG is not available: {exc}") from exc
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_uint,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
    ]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
    if rate <= 0:
        raise SpeechError("eSpeak NG failed to initialise its data")
    lib.espeak_SetSynthCallback(_on_samples)
    if hasattr(lib, "espeak_ng_SetRandSeed"):
        lib.espeak_ng_SetRandSeed.restype = None
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    _lib, _sample_rate = lib, rate
    return lib


def voice_for(name: str) -> tuple[str, int]:
    """eSpeak voice and pitch for an OpenAI voice name (unknown names get the default)."""
    return VOICES.get(name, VOICES[DEFAULT_VOICE])


class Speaker:
    """Speaks text in one voice at one speed; safe to share between threads."""

    def __init__(self, *, voice: str = DEFAULT_VOICE, speed: float = 1.0) -> None:
        self.voice = voice
        self.speed = speed
        espeak_voice, self._pitch = voice_for(voice)
        self._espeak_voice = espeak_voice.encode()
        rate = round(_BASE_RATE_WPM * speed)
        self._rate_wpm = max(_MIN_RATE_WPM, min(_MAX_RATE_WPM, rate))

    def synthesize(self, text: str) -> tuple[bytes, int]:
        """Render ``text`` as mono s16le PCM; returns ``(pcm, sample_rate)``."""
        data = text.strip().encode("utf-8")
        with _lock:
            lib = _library()
            if not data:
                return b"", _sample_rate
            if lib.espeak_SetVoiceByName(self._espeak_voice) != _EE_OK:
                raise SpeechError(f"eSpeak NG has no voice {self._espeak_voice.decode()!r}")
            lib.espeak_SetParameter(_ESPEAK_RATE, self._rate_wpm, 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, self._pitch, 0)
            # eSpeak draws random noise for breath and fricatives, from its own generator
            # and from the C library's rand(): fixed seeds make the same text sound the
            # same every time (and the tests' recordings reproducible).
            if hasattr(lib, "espeak_ng_SetRandSeed"):
                lib.espeak_ng_SetRandSeed(_RANDOM_SEED)
            _libc.srand(_RANDOM_SEED)
            _chunks.clear()
            buffer = ctypes.create_string_buffer(data)
            status = lib.espeak_Synth(
                buffer, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None
            )
            pcm = b"".join(_chunks)
            _chunks.clear()
        if status != _EE_OK:
            raise SpeechError(f"eSpeak NG could not synthesise (status {status})")
        return pcm, _sample_rate
