"""Speech-to-text for the built-in engine: pocketsphinx with its bundled en-us model.

A small language model built from the session's tools (``grammar.py``) is searched:
fast, and reliable for commands and for requests whose free text uses the lexicon's
vocabulary. Anything else said is heard as the nearest words of that vocabulary, which
the brain answers. (pocketsphinx's general English model is not tried as a fallback:
it takes seconds to load and to decode, longer than a caller waits.)

Building a decoder is slow (hundreds of ms), so decoders are pooled per tool model and
reused across utterances, calls and Transcriber instances; a decoder is used by one
thread at a time.
"""

from __future__ import annotations

import hashlib
import json
import math
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
# ``warp_params`` compresses the frequency axis by 1.3 before the acoustic model sees
# it (vocal tract length normalisation): measured on the project's spoken sets it heard
# 90% of takes right against 81% unwarped, without losing the lower-pitched voices.
# ``cmn: batch`` normalises each utterance on its own, so a pooled decoder's result does
# not depend on what it heard before.
_TOOL_DECODER = {
    "fwdflat": False,
    "bestpath": True,
    "maxhmmpf": 3000,
    "lw": 9.0,
    "warp_params": "1.3",
    "cmn": "batch",
    # Gaussians scored per codebook and frame (default 4). Measured on the labelled set
    # and a held-out set: 4 → 88.9% / 69.4%, 8 → 91.7% / 75.0%, 12 → 94.4% / 75.0%,
    # 16 → 95.8% / 77.8%, no better above 16. It is most of the decoding time:
    # 16 costs about 1.6× the default's.
    "topn": 16,
}
_MAX_IDLE_PER_POOL = 4
_MAX_POOLS = 16
# Silence kept either side of the speech when trimming; decoding silence costs time.
_KEEP_SILENCE_MS = 150
# Hypotheses from the recogniser's n-best list that vote on what was meant, and how
# fast a hypothesis's vote fades as its score falls behind the best one's.
_ALTERNATIVES = 20
_VOTE_SCALE = 0.005

_pools_lock = threading.Lock()
_pools: OrderedDict[str, list[Any]] = OrderedDict()
_dictionary_lock = threading.Lock()
_dictionary: dict[str, list[str]] | None = None
_models_lock = threading.Lock()
_models: OrderedDict[str, str] = OrderedDict()


def _pronunciations() -> dict[str, list[str]]:
    """The bundled pronouncing dictionary: word → its lines (variants), loaded once."""
    global _dictionary
    with _dictionary_lock:
        if _dictionary is None:
            entries: dict[str, list[str]] = {}
            path = get_model_path("en-us/cmudict-en-us.dict")
            with open(path, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        word = line.split(" ", 1)[0].split("(", 1)[0]
                        entries.setdefault(word, []).append(line.rstrip("\n"))
            _dictionary = entries
        return _dictionary


def _model_words(model: str) -> list[str]:
    """The unigrams of an ARPA model (its whole vocabulary)."""
    out: list[str] = []
    in_unigrams = False
    for line in model.splitlines():
        if line.startswith("\\"):
            in_unigrams = line.strip() == "\\1-grams:"
            continue
        fields = line.split()
        if in_unigrams and len(fields) >= 2:
            out.append(fields[1])
    return out


def _model_for(tools: list[dict[str, Any]]) -> str:
    """The tool set's language model, built once per distinct tool set."""
    key = hashlib.sha256(json.dumps(tools, sort_keys=True, default=str).encode()).hexdigest()
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            _models.move_to_end(key)
            return model
    known = _pronunciations()
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
    # The decoder reads its model and dictionary from files, only while loading. The
    # dictionary holds just the model's words: loading all 130 000 words of the bundled
    # one takes seconds, and the model cannot produce any other word anyway.
    pronunciations = _pronunciations()
    lines = [line for word in _model_words(model) for line in pronunciations.get(word, ())]
    with tempfile.TemporaryDirectory(prefix="engine-stt-") as directory:
        lm_path = os.path.join(directory, "tools.arpa")
        dict_path = os.path.join(directory, "tools.dict")
        with open(lm_path, "w", encoding="utf-8") as out:
            out.write(model)
        with open(dict_path, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        return Decoder(lm=lm_path, dict=dict_path, loglevel="FATAL", **_TOOL_DECODER)


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


def _alternatives(decoder: Any, pcm: bytes, limit: int) -> list[tuple[str, float]]:
    """The best hypothesis first, then up to ``limit`` runners-up, with their scores.

    Repeats are kept: the same words over different alignments are more evidence.
    """
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    best = decoder.hyp()
    if best is None or not best.hypstr.strip():
        return []
    out = [(best.hypstr.strip(), float(best.score))]
    try:
        for _, hypothesis in zip(range(limit), decoder.nbest(), strict=False):
            if hypothesis is None or not hypothesis.hypstr:
                continue
            text = " ".join(w for w in hypothesis.hypstr.split() if not w.startswith("<"))
            if text:
                out.append((text, float(hypothesis.score)))
    except RuntimeError:
        pass  # no lattice for this utterance: the best hypothesis is all there is
    return out


def _vote(hypotheses: list[tuple[str, float]], tools: list[dict[str, Any]]) -> str | None:
    """The words of the tool call most of the n-best list's weight agrees on, if any.

    Each hypothesis the brain turns into a complete call votes for that call (name and
    arguments) with a weight fading with its score's distance from the best; runners-up
    agreeing on "go to the first picture" outvote a best guess of "the third picture".
    """
    top = hypotheses[0][1]
    tally: dict[str, list[Any]] = {}
    meanings: dict[str, str | None] = {}  # the list repeats texts: decide each once
    for text, score in hypotheses:
        if text not in meanings:
            decision = decide(text=text, tools=tools)
            meanings[text] = (
                json.dumps([decision.name, decision.arguments], sort_keys=True, default=str)
                if isinstance(decision, FunctionCall)
                else None
            )
        meaning = meanings[text]
        if meaning is None:
            continue
        weight = math.exp(max(-50.0, (score - top) / _VOTE_SCALE))
        entry = tally.setdefault(meaning, [0.0, text])
        entry[0] += weight
    if not tally:
        return None
    return str(max(tally.values(), key=lambda entry: entry[0])[1])


def _is_small_talk(text: str) -> bool:
    """A greeting or question to the assistant: never traded for a runner-up command."""
    spoken = f" {' '.join(lexicon.words(text))} "
    return any(f" {phrase} " in spoken for phrase in lexicon.CHAT_PHRASES)


class Transcriber:
    """Turns one utterance of 16 kHz mono s16le audio into text, for one tool set.

    The recogniser's n-best hypotheses vote on the tool call meant (see ``_vote``), so
    "open picture whale" loses to "open picture twelve"; when none makes a complete
    call, or the best is small talk, the single best hypothesis is returned for the
    brain to answer.
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
            hypotheses = _alternatives(decoder, audio, _ALTERNATIVES)
        finally:
            _give_back(self._key, decoder)
        if not hypotheses:
            return ""
        best = hypotheses[0][0]
        if _is_small_talk(best):
            return best
        return _vote(hypotheses, self.tools) or best
