"""pocketsphinx with the tool-set language model, on the project's own recordings."""

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.engine.recordings import Studio, Take
from tests.engine.test_brain import THERMOSTAT
from tests.engine.utterances import GALLERY_TOOLS
from voice.engine import stt
from voice.engine.stt import Transcriber


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Studio:
    return Studio(Path(tmp_path_factory.mktemp("stt-recordings")))


@pytest.fixture(scope="module")
def transcriber() -> Transcriber:
    return Transcriber(tools=GALLERY_TOOLS)


@pytest.mark.parametrize(
    "text",
    ["show me the next picture", "go back", "open image three", "describe this image"],
)
def test_commands_are_heard_word_for_word(
    studio: Studio, transcriber: Transcriber, text: str
) -> None:
    assert transcriber.transcribe(studio.pcm(Take(text, voice="marin"))) == text


def test_free_text_keeps_its_content_words(studio: Studio, transcriber: Transcriber) -> None:
    heard = transcriber.transcribe(studio.pcm(Take("paint a red fox in the snow", voice="marin")))
    assert "fox" in heard and "snow" in heard


def test_another_tool_set_hears_its_numbers(studio: Studio) -> None:
    transcriber = Transcriber(tools=THERMOSTAT)
    pcm = studio.pcm(Take("set the temperature to twenty one degrees", voice="marin"))
    assert "twenty one" in transcriber.transcribe(pcm)


def test_silence_and_tiny_input_are_empty(transcriber: Transcriber) -> None:
    assert transcriber.transcribe(b"") == ""
    assert transcriber.transcribe(bytes(1000)) == ""


def test_decoders_are_reused(
    studio: Studio, transcriber: Transcriber, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Building a decoder is the slow part; the same tool set must never build twice.
    builds: list[str] = []
    build = stt._tool_decoder

    def counted_build(model: str) -> Any:
        builds.append(model)
        return build(model)

    monkeypatch.setattr(stt, "_tool_decoder", counted_build)
    again = Transcriber(tools=GALLERY_TOOLS)
    assert again.model is transcriber.model
    pcm = studio.pcm(Take("first image", voice="coral"))
    again.transcribe(pcm)
    transcriber.transcribe(pcm)
    assert builds == []


def test_one_transcriber_serves_threads_at_once(studio: Studio, transcriber: Transcriber) -> None:
    texts = ["go back", "open image three", "show me the next picture"]
    clips = [studio.pcm(Take(text, voice="marin")) for text in texts]
    results: dict[int, str] = {}

    def run(i: int) -> None:
        results[i] = transcriber.transcribe(clips[i % 3])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(6)] == texts * 2
