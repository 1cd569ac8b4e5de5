"""Speech-to-text for the built-in engine: pocketsphinx with its bundled en-us model.

A small language model built from the session's tools (``grammar.py``) is searched
first: fast, and reliable for commands and for requests whose free text uses the
lexicon's vocabulary. When it finds nothing, pocketsphinx's general English model has a
go, so an unexpected sentence still yields words for the brain to answer.

Building a decoder is slow (hundreds of ms), so decoders are pooled per tool model and
reused across utterances, calls and Transcriber instances; a decoder is used by one
thread at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
from pocketsphinx import Decoder, get_model_path

from voice.engine import lexicon
from voice.engine.brain import FunctionCall, decide
from voice.engine.grammar import language_model

SAMPLE_RATE = 16_000
# Decoding settings for the small tool model: one fast pass, a bounded search and a
# language weight that trusts the model's phrasings over a robotic-sounding voice.
_TOOL_DECODER = {
    "fwdflat": False,
    "bestpath": True,
    "maxhmmpf": 3000,
    "lw": 9.0,
}
_MAX_IDLE_PER_POOL = 4
_MAX_POOLS = 16
# Silence kept either side of the speech when trimming; decoding silence costs time.
_KEEP_SILENCE_MS = 150
_LM_POOL = "__language_model__"
_ALTERNATIVES = 8

_pools_lock = threading.Lock()
_pools: OrderedDict[str, list[Any]] = OrderedDict()
_dictionary_lock = threading.Lock()
_dictionary: frozenset[str] | None = None
_models_lock = threading.Lock()
_models: OrderedDict[str, str] = OrderedDict()


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


def _model_for(tools: list[dict[str, Any]]) -> str:
    """The tool set's language model, built once per distinct tool set."""
    key = hashlib.sha256(json.dumps(tools, sort_keys=True, default=str).encode()).hexdigest()
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
            return model
    known = _known_words()
    model = language_model(tools, lambda word: word in known)
    with _models_lock:
        _models[key] = model
        while len(_models) > _MAX_POOLS:
            _models.popitem(last=False)
    return model


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


def _tool_decoder(model: str) -> Any:
    # The decoder reads its model from a file; the file is only needed while loading.
    handle, path = tempfile.mkstemp(suffix=".arpa")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(model)
        return Decoder(lm=path, loglevel="FATAL", **_TOOL_DECODER)
    finally:
        os.unlink(path)


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


def _alternatives(decoder: Any, pcm: bytes, limit: int) -> list[str]:
    """The best hypothesis first, then up to ``limit`` distinct runners-up."""
    best = _decode(decoder, pcm)
    out = [best] if best else []
    try:
        for hypothesis in decoder.nbest():
            if hypothesis is None or not hypothesis.hypstr:
                continue
            text = " ".join(w for w in hypothesis.hypstr.split() if not w.startswith("<"))
            if text and text not in out:
                out.append(text)
            if len(out) > limit:
                break
    except RuntimeError:
        pass  # no lattice for this utterance: the best hypothesis is all there is
    return out


def _is_small_talk(text: str) -> bool:
    """A greeting or question to the assistant: never traded for a runner-up command."""
    spoken = f" {' '.join(lexicon.words(text))} "
    return any(f" {phrase} " in spoken for phrase in lexicon.CHAT_PHRASES)


class Transcriber:
    """Turns one utterance of 16 kHz mono s16le audio into text, for one tool set.

    Among the recogniser's best few hypotheses, the first that the brain can turn into a
    complete tool call wins ("open picture whale" loses to "open picture twelve"); when
    none can, the single best hypothesis is returned for the brain to answer.
    """

    def __init__(self, *, tools: list[dict[str, Any]]) -> None:
        self.tools = tools
        self.model = _model_for(tools)
        self._key = hashlib.sha256(self.model.encode()).hexdigest()
        # Build (or find) one decoder now, so the first utterance is not the slow one.
        _give_back(self._key, _take(self._key, self._build))

    def _build(self) -> Any:
        return _tool_decoder(self.model)

    def transcribe(self, pcm: bytes) -> str:
        """The words said in ``pcm``, or "" when nothing was recognised."""
        if len(pcm) < SAMPLE_RATE // 10:  # under 50 ms: nothing to hear
            return ""
        audio = _trim_silence(pcm)
        decoder = _take(self._key, self._build)
        try:
            candidates = _alternatives(decoder, audio, _ALTERNATIVES)
        finally:
            _give_back(self._key, decoder)
        if candidates and not _is_small_talk(candidates[0]):
            for text in candidates:
                if isinstance(decide(text=text, tools=self.tools), FunctionCall):
                    return text
        if candidates:
            return candidates[0]
        decoder = _take(_LM_POOL, _language_model_decoder)
        try:
            return _decode(decoder, audio)
        finally:
            _give_back(_LM_POOL, decoder)
