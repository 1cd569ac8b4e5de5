"""Speech recognition off the event loop: pocketsphinx in a small pool of worker processes.

pocketsphinx holds the GIL while it builds a decoder and while it decodes, so run in a
thread it freezes the event loop it shares a process with (every call, socket and ICE
check of a Daphne process). Here each utterance is recognised in a separate process.

The pool is a few single-process slots (``min(2, cpu_count)`` by default). A slot is one
``ProcessPoolExecutor(max_workers=1)`` started with the ``spawn`` context (the server
process runs threads and an event loop, which must never be forked). Each worker keeps
one ``stt.Transcriber`` per tool set, so its language model and decoders are built once;
:meth:`Recognizer.prepare` builds them in every worker before the caller speaks.

A worker that dies (killed, out of memory, crashed) fails the utterances it held with
:class:`RecognitionError` and its slot starts a fresh process for the next one. An
utterance not recognised within the timeout is logged and heard as "" and its worker,
possibly stuck, is killed and replaced.

Concurrent futures, not asyncio objects, connect the slots to the workers, so one
Recognizer may serve several event loops (and threads) at once. Nothing here uses Django.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures.process import BrokenProcessPool
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
# Building a tool set's model and decoder takes about half a second, a cold worker's
# start (a fresh interpreter importing numpy and pocketsphinx) a second or two more.
DEFAULT_PREPARE_TIMEOUT_SECONDS = 60.0
# Tool sets a worker keeps ready; the least recently used is dropped past this.
_TRANSCRIBERS_PER_WORKER = 8


class RecognitionError(RuntimeError):
    """An utterance could not be recognised: its worker process failed."""


def default_workers() -> int:
    """Worker processes for a Recognizer: one per core, at most two."""
    return max(1, min(2, os.cpu_count() or 1))


def _tools_key(tools: list[dict[str, Any]]) -> tuple[str, str]:
    """The tool set as JSON (what a worker receives) and a short key naming it."""
    blob = json.dumps(tools, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest(), blob


# --- inside a worker process -------------------------------------------------------

_transcribers: OrderedDict[str, Any] = OrderedDict()


def _worker_start() -> None:
    # The parent decides when workers stop; Ctrl-C in a terminal reaches them too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import pocketsphinx  # noqa: F401  (load the library before the first utterance)

    from voice.engine import stt  # noqa: F401


def _worker_transcriber(key: str, tools_json: str) -> Any:
    from voice.engine.stt import Transcriber

    transcriber = _transcribers.get(key)
    if transcriber is None:
        transcriber = Transcriber(tools=json.loads(tools_json))
        _transcribers[key] = transcriber
        while len(_transcribers) > _TRANSCRIBERS_PER_WORKER:
            _transcribers.popitem(last=False)
    _transcribers.move_to_end(key)
    return transcriber


def _worker_prepare(key: str, tools_json: str) -> None:
    _worker_transcriber(key, tools_json)


def _worker_transcribe(key: str, tools_json: str, pcm: bytes) -> str:
    return str(_worker_transcriber(key, tools_json).transcribe(pcm))


# --- in the caller's process -------------------------------------------------------


class _Slot:
    """One worker process: its executor, its pid and the tool sets it has ready."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._pid: concurrent.futures.Future[int] | None = None
        self._ready: set[str] = set()
        self.busy = 0

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=self._context, initializer=_worker_start
        )
        # Tasks run in order, so the pid is known before any utterance starts.
        self._pid = executor.submit(os.getpid)
        self._executor = executor
        self._ready = set()
        return executor

    def submit(
        self, function: Any, *args: Any
    ) -> tuple[concurrent.futures.ProcessPoolExecutor, concurrent.futures.Future[Any]]:
        """``(worker, future)``: the worker is the token :meth:`replace` takes."""
        with self._lock:
            executor = self._executor or self._start()
            try:
                return executor, executor.submit(function, *args)
            except BrokenProcessPool:
                # The worker died while idle: nothing of ours ran, start afresh.
                self._discard(executor)
                executor = self._start()
                return executor, executor.submit(function, *args)

    def is_ready(self, key: str) -> bool:
        with self._lock:
            return key in self._ready

    def mark_ready(self, worker: concurrent.futures.ProcessPoolExecutor, key: str) -> None:
        with self._lock:
            if self._executor is worker:
                self._ready.add(key)

    def pid(self) -> int | None:
        with self._lock:
            pid = self._pid
        if pid is None or not pid.done() or pid.exception() is not None:
            return None
        return pid.result()

    def _discard(self, executor: concurrent.futures.ProcessPoolExecutor) -> None:
        if self._executor is executor:
            self._executor = None
            self._pid = None
            self._ready = set()
        executor.shutdown(wait=False, cancel_futures=True)

    def replace(self, worker: concurrent.futures.ProcessPoolExecutor, *, kill: bool) -> None:
        """Drop ``worker`` (killing its process first when it may be stuck)."""
        with self._lock:
            if self._executor is not worker:
                return  # already replaced
            pid = self._pid
            if kill and pid is not None and pid.done() and pid.exception() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid.result(), signal.SIGKILL)
            self._discard(worker)

    def close(self) -> None:
        with self._lock:
            worker = self._executor
        if worker is not None:
            self.replace(worker, kill=True)


class Recognizer:
    """Speech-to-text for any number of calls, in a few worker processes.

    ``workers`` defaults to :func:`default_workers`. ``timeout`` bounds one utterance's
    recognition once its worker has the tool set ready; ``prepare_timeout`` bounds
    building a tool set (and starting a worker).
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        prepare_timeout: float = DEFAULT_PREPARE_TIMEOUT_SECONDS,
    ) -> None:
        count = default_workers() if workers is None else int(workers)
        if count < 1:
            raise ValueError("a Recognizer needs at least one worker")
        self.timeout = timeout
        self.prepare_timeout = prepare_timeout
        self._lock = threading.Lock()
        context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(context) for _ in range(count)]
        self._closed = False

    def worker_pids(self) -> list[int | None]:
        """The worker processes' ids (None for a slot not started yet)."""
        return [slot.pid() for slot in self._slots]

    def _check_open(self) -> None:
        if self._closed:
            raise RecognitionError("the speech recogniser is closed")

    async def _run(
        self, slot: _Slot, key: str | None, seconds: float, function: Any, *args: Any
    ) -> tuple[bool, Any]:
        """Run in ``slot``; ``(False, None)`` on timeout. Worker death → RecognitionError."""
        worker, future = slot.submit(function, *args)
        try:
            result = await asyncio.wait_for(asyncio.wrap_future(future), seconds)
        except TimeoutError:
            # Still queued: just drop it. Running: its worker may be stuck, so kill it.
            if not future.cancel():
                slot.replace(worker, kill=True)
            return False, None
        except BrokenProcessPool as exc:
            slot.replace(worker, kill=False)
            raise RecognitionError("the speech recognition worker stopped") from exc
        except asyncio.CancelledError:
            future.cancel()
            raise
        if key is not None:
            slot.mark_ready(worker, key)
        return True, result

    async def prepare(self, tools: list[dict[str, Any]]) -> None:
        """Build the tool set's recogniser in every worker, before anyone speaks.

        Raises RecognitionError when a worker fails or does not finish in time.
        """
        self._check_open()
        key, blob = _tools_key(tools)

        async def one(slot: _Slot) -> None:
            if slot.is_ready(key):
                return
            timeout = self.prepare_timeout
            done, _ = await self._run(slot, key, timeout, _worker_prepare, key, blob)
            if not done:
                raise RecognitionError("preparing speech recognition timed out")

        await asyncio.gather(*(one(slot) for slot in self._slots))

    def _pick(self, key: str) -> _Slot:
        """The least busy worker, preferring one with the tool set already built."""
        with self._lock:
            slot = min(self._slots, key=lambda s: (s.busy, not s.is_ready(key)))
            slot.busy += 1
            return slot

    async def transcribe(self, tools: list[dict[str, Any]], pcm: bytes) -> str:
        """The words said in ``pcm`` (16 kHz mono s16le), chosen with the tools in mind.

        "" when nothing was recognised or recognition timed out (logged). Raises
        RecognitionError when the worker died; the next utterance gets a fresh worker.
        """
        self._check_open()
        key, blob = _tools_key(tools)
        slot = self._pick(key)
        timeout = self.timeout
        if not slot.is_ready(key):
            timeout += self.prepare_timeout
        started = time.monotonic()
        try:
            done, text = await self._run(slot, key, timeout, _worker_transcribe, key, blob, pcm)
        finally:
            with self._lock:
                slot.busy -= 1
        if not done:
            logger.warning(
                "speech recognition timed out after %.1f s (%d bytes of audio); worker replaced",
                time.monotonic() - started,
                len(pcm),
            )
            return ""
        return str(text)

    def close(self) -> None:
        """Stop the workers; further use raises RecognitionError."""
        self._closed = True
        for slot in self._slots:
            slot.close()


_shared_lock = threading.Lock()
_shared: Recognizer | None = None


def get_recognizer(*, workers: int | None = None) -> Recognizer:
    """The process's shared Recognizer, created on first use (``workers`` applies then)."""
    global _shared
    with _shared_lock:
        if _shared is None or _shared._closed:
            _shared = Recognizer(workers=workers)
        return _shared


@atexit.register
def _close_shared() -> None:
    with _shared_lock:
        if _shared is not None:
            _shared.close()
