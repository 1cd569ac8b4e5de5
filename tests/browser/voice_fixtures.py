"""What the voice browser tests add to the shared live site (tests/browser/conftest.py):
a recorded utterance made by the project's own TTS, Chromium with that recording as its
microphone, and a staff user for the admin.

The site runs with no OpenAI key, so the browser talks to the built-in engine exactly as
it would talk to OpenAI.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD, LiveSite

WAV_RATE = 16_000
# The fake microphone starts at getUserMedia, before the call is up: lead with silence
# long enough for the call to connect, and trail with enough for VAD to see the end.
LEADING_SILENCE_S = 4.0
TRAILING_SILENCE_S = 2.0
STAFF = "voice-staff"

_SEED_STAFF = r"""
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
spec = json.loads(sys.argv[1])
get_user_model().objects.create_superuser(spec["username"], password=spec["password"])
print(json.dumps({"ok": True}))
"""


def make_utterance(path: Path, text: str) -> Path:
    """Speaks `text` with the project's own TTS into a 16 kHz mono 16-bit WAV, padded with
    silence, for Chromium's fake microphone."""
    from voice.engine.tts import Speaker

    pcm, rate = Speaker().synthesize(text)
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    target = np.arange(0, len(samples) / rate, 1 / WAV_RATE)
    resampled = np.interp(target, np.arange(len(samples)) / rate, samples)
    lead = np.zeros(int(LEADING_SILENCE_S * WAV_RATE))
    tail = np.zeros(int(TRAILING_SILENCE_S * WAV_RATE))
    write_wav(path, np.concatenate([lead, resampled, tail]))
    return path


def make_silence(path: Path, seconds: float = 180.0) -> Path:
    """A silent microphone: Chromium's default fake device beeps, which VAD hears."""
    write_wav(path, np.zeros(int(seconds * WAV_RATE)))
    return path


def write_wav(path: Path, audio: np.ndarray) -> None:
    clipped = np.clip(np.round(audio), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(clipped.tobytes())


def chromium_args(*, wav: Path | None, fake_ui: bool = True) -> list[str]:
    args = [
        *CHROMIUM_ARGS,
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--use-fake-device-for-media-stream",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop")
    return args


@pytest.fixture(scope="module")
def voice_site(live_site: LiveSite) -> LiveSite:
    """The shared live site with the terminals these tests drive and a staff user."""
    for slug in ("spoken", "typed", "denied", "restart"):
        live_site.seed_terminal(slug)
    live_site.run_python(_SEED_STAFF, {"username": STAFF, "password": PASSWORD})
    return live_site


@pytest.fixture(scope="module")
def utterance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    return make_utterance(folder / "next-picture.wav", "show the next picture")


@pytest.fixture(scope="module")
def silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_silence(tmp_path_factory.mktemp("audio") / "silence.wav")


@pytest.fixture
def launch_chromium(playwright_sync: Any) -> Iterator[Callable[..., Any]]:
    """Launches Chromium with a given WAV as its microphone; closed after the test."""
    browsers: list[Any] = []

    def launch(*, wav: Path | None, fake_ui: bool = True) -> Any:
        browser = playwright_sync.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=chromium_args(wav=wav, fake_ui=fake_ui),
        )
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        browser.close()
