"""Speech-to-text for the built-in engine: pocketsphinx with its bundled en-us model.

A grammar built from the session's tools (``grammar.py``) is searched first: it is fast
and reliable for commands and for requests whose free text uses the lexicon's
vocabulary. When the grammar finds nothing, pocketsphinx's general language model has a
go, so an unexpected sentence still yields words for the brain to answer.

Building a decoder is slow (hundreds of ms), so decoders are pooled per grammar and
reused across utterances, calls and Transcriber instances; a decoder is used by one
thread at a time.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from pocketsphinx import Decoder, get_model_path

from voice.engine.grammar import GrammarBuilder

SAMPLE_RATE = 16_000
_GRAMMAR_SEARCH = "tools"
_MAX_IDLE_PER_POOL = 4
_MAX_POOLS = 16
# Silence kept either side of the speech when trimming; decoding silence costs time.
_KEEP_SILENCE_MS = 150
_LM_POOL = "__language_model__"

_pools_lock = threading.Lock()
_pools: OrderedDict[str, list[Any]] = OrderedDict()
_dictionary_lock = threading.Lock()
_dictionary: frozenset[str] | None = None


def _known_words() -> frozenset[str]:
    """Every word of the bundled pronouncing dictionary (loaded once)."""
    global _dictionary
    with _dictionary_lock:
        if _dictionary is None:
            path = get_model_path("en-us/cmudict-en-us.dict")
            with open(path, encoding="utf-8") as handle:
                _dictionary = frozenset(
                    line.split(" ", 1)[0].split("(", 1)[0] for line in handle if line.strip()
                )
        return _dictionary


def _take(key: str, build: Callable[[], Any]) -> Any:
    with _pools_lock:
        idle = _pools.get(key)
        if idle:
            _pools.move_to_end(key)
            return idle.pop()
    return build()


def _give_back(key: str, decoder: Any) -> None:
    with _pools_lock:
        idle = _pools.setdefault(key, [])
        _pools.move_to_end(key)
        if len(idle) < _MAX_IDLE_PER_POOL:
            idle.append(decoder)
        while len(_pools) > _MAX_POOLS:
            _pools.popitem(last=False)


def _grammar_decoder(grammar: str) -> Any:
    decoder = Decoder(lm=None, loglevel="FATAL")
    decoder.add_jsgf_string(_GRAMMAR_SEARCH, grammar)
    decoder.activate_search(_GRAMMAR_SEARCH)
    return decoder


def _language_model_decoder() -> Any:
    return Decoder(loglevel="FATAL")


def _trim_silence(pcm: bytes) -> bytes:
    """Drop the silence around the speech (VAD padding), keeping a short margin."""
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2")
    frame = SAMPLE_RATE // 100
    count = len(samples) // frame
    if count < 3:
        return pcm
    frames = samples[: count * frame].astype(np.float64).reshape(count, frame)
    energy = np.sqrt(np.mean(frames * frames, axis=1))
    floor = float(np.percentile(energy, 10))
    loud = np.nonzero(energy > max(floor * 3.0, 30.0))[0]
    if len(loud) == 0:
        return pcm
    keep = _KEEP_SILENCE_MS // 10
    first = max(0, int(loud[0]) - keep)
    last = min(count, int(loud[-1]) + 1 + keep)
    return samples[first * frame : last * frame].tobytes()


def _decode(decoder: Any, pcm: bytes) -> str:
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr.strip() if hypothesis is not None else ""


class Transcriber:
    """Turns one utterance of 16 kHz mono s16le audio into text, for one tool set."""

    def __init__(self, *, tools: list[dict[str, Any]]) -> None:
        known = _known_words()
        self.grammar = GrammarBuilder(lambda word: word in known).build(tools)
        self._key = hashlib.sha256(self.grammar.encode()).hexdigest()
        # Build (or find) one decoder now, so the first utterance is not the slow one.
        _give_back(self._key, _take(self._key, self._build))

    def _build(self) -> Any:
        return _grammar_decoder(self.grammar)

    def transcribe(self, pcm: bytes) -> str:
        """The words said in ``pcm``, or "" when nothing was recognised."""
        if len(pcm) < SAMPLE_RATE // 10:  # under 50 ms: nothing to hear
            return ""
        audio = _trim_silence(pcm)
        decoder = _take(self._key, self._build)
        try:
            text = _decode(decoder, audio)
        finally:
            _give_back(self._key, decoder)
        if text:
            return text
        decoder = _take(_LM_POOL, _language_model_decoder)
        try:
            return _decode(decoder, audio)
        finally:
            _give_back(_LM_POOL, decoder)
