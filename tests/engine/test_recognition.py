"""Speech recognition in worker processes: the event loop stays free, dead workers are replaced."""

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.recordings import Studio, Take
from tests.engine.test_brain import THERMOSTAT
from tests.engine.utterances import GALLERY_TOOLS
from voice.engine.recognition import RecognitionError, Recognizer, get_recognizer

# The loop must never stall this long while speech is recognised.
MAX_LOOP_GAP_SECONDS = 0.1
LONG_TEXTS = (
    "show me the next picture",
    "paint a red fox in the snow",
    "go to picture number five",
    "make it black and white",
    "draw a city at night",
    "create a blue whale in the ocean",
)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Studio:
    return Studio(Path(tmp_path_factory.mktemp("recognition-recordings")))


@pytest.fixture(scope="module")
def long_clip(studio: Studio) -> bytes:
    """Half a minute of commands back to back: seconds of decoding in one utterance."""
    clips = [studio.pcm(Take(text, voice="marin", lead_ms=0, tail_ms=100)) for text in LONG_TEXTS]
    return b"".join(clips) * 3


@pytest.fixture(scope="module")
def recognizer() -> Iterator[Recognizer]:
    recognizer = Recognizer(workers=1)
    yield recognizer
    recognizer.close()


async def _max_gap_while(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    """Run ``awaitable`` while a 10 ms ticker measures the loop's longest stall."""
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    try:
        result = await awaitable
    finally:
        stop.set()
        await ticking
    return result, max(gaps) - 0.01


async def test_words_come_back_from_the_worker(recognizer: Recognizer, studio: Studio) -> None:
    await recognizer.prepare(GALLERY_TOOLS)
    pcm = studio.pcm(Take("open image three", voice="marin"))
    assert await recognizer.transcribe(GALLERY_TOOLS, pcm) == "open image three"
    assert await recognizer.transcribe(GALLERY_TOOLS, b"") == ""


async def test_each_tool_set_is_heard_with_its_own_vocabulary(
    recognizer: Recognizer, studio: Studio
) -> None:
    pcm = studio.pcm(Take("set the temperature to twenty one degrees", voice="marin"))
    await recognizer.prepare(THERMOSTAT)
    assert "twenty one" in await recognizer.transcribe(THERMOSTAT, pcm)


async def test_the_event_loop_keeps_ticking_while_speech_is_recognised(
    recognizer: Recognizer, long_clip: bytes
) -> None:
    # A tool set no worker has seen: the model and decoder are built during prepare.
    tools = [{**GALLERY_TOOLS[1], "name": "generate_picture"}, *GALLERY_TOOLS[:1]]
    _, prepare_gap = await _max_gap_while(recognizer.prepare(tools))
    started = time.perf_counter()
    heard, gap = await _max_gap_while(recognizer.transcribe(tools, long_clip))
    took = time.perf_counter() - started
    assert "fox" in heard
    assert took > 5 * MAX_LOOP_GAP_SECONDS, "the clip must take a while to recognise"
    assert prepare_gap < MAX_LOOP_GAP_SECONDS
    assert gap < MAX_LOOP_GAP_SECONDS


async def test_a_killed_worker_fails_its_utterance_and_is_replaced(
    recognizer: Recognizer, studio: Studio, long_clip: bytes
) -> None:
    await recognizer.prepare(GALLERY_TOOLS)
    [pid] = recognizer.worker_pids()
    assert pid is not None
    running = asyncio.create_task(recognizer.transcribe(GALLERY_TOOLS, long_clip))
    await asyncio.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RecognitionError, match="worker stopped"):
        await asyncio.wait_for(running, 5)

    pcm = studio.pcm(Take("go back", voice="marin"))
    assert await recognizer.transcribe(GALLERY_TOOLS, pcm) == "go back"
    [replacement] = recognizer.worker_pids()
    assert replacement not in (None, pid)


async def test_a_worker_killed_while_idle_is_replaced(
    recognizer: Recognizer, studio: Studio
) -> None:
    await recognizer.prepare(GALLERY_TOOLS)
    [pid] = recognizer.worker_pids()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.5)  # the pool notices its worker is gone
    pcm = studio.pcm(Take("go back", voice="marin"))
    assert await recognizer.transcribe(GALLERY_TOOLS, pcm) == "go back"
    assert recognizer.worker_pids()[0] not in (None, pid)


@pytest.fixture
async def impatient() -> AsyncIterator[Recognizer]:
    recognizer = Recognizer(workers=1, timeout=0.2)
    yield recognizer
    recognizer.close()


async def test_a_recognition_past_the_timeout_is_empty_and_its_worker_replaced(
    impatient: Recognizer, studio: Studio, long_clip: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await impatient.prepare(GALLERY_TOOLS)
    [pid] = impatient.worker_pids()
    started = time.perf_counter()
    assert await impatient.transcribe(GALLERY_TOOLS, long_clip) == ""
    assert time.perf_counter() - started < 2
    assert "speech recognition timed out" in caplog.text
    impatient.timeout = 10.0
    pcm = studio.pcm(Take("go back", voice="marin"))
    assert await impatient.transcribe(GALLERY_TOOLS, pcm) == "go back"
    assert impatient.worker_pids()[0] not in (None, pid)


async def test_a_closed_recognizer_refuses_work() -> None:
    recognizer = Recognizer(workers=1)
    recognizer.close()
    with pytest.raises(RecognitionError, match="closed"):
        await recognizer.transcribe(GALLERY_TOOLS, bytes(3200))


def test_the_shared_recognizer_is_one_per_process() -> None:
    shared = get_recognizer()
    assert get_recognizer() is shared
    assert len(shared.worker_pids()) == min(2, os.cpu_count() or 1)


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError):
        Recognizer(workers=0)
