"""eSpeak NG through the wheel's library: real audio, per-voice timbre, speed."""

import numpy as np
import pytest

from voice.engine.tts import VOICES, Speaker


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def test_speech_is_audible_and_about_as_long_as_the_words() -> None:
    pcm, rate = Speaker().synthesize("show me the next picture")
    samples = _samples(pcm)
    assert rate == 22050
    seconds = len(samples) / rate
    assert 0.8 < seconds < 3.0  # five words at about three words a second
    assert np.sqrt(np.mean(samples**2)) > 500  # not silence


def test_every_openai_voice_speaks_and_voices_differ() -> None:
    renders = {name: Speaker(voice=name).synthesize("hello there")[0] for name in VOICES}
    assert all(len(pcm) > 10_000 for pcm in renders.values())
    assert len(set(renders.values())) == len(VOICES)


def test_unknown_voice_falls_back_to_the_default() -> None:
    unknown, _ = Speaker(voice="nobody").synthesize("go to picture number five")
    default, _ = Speaker().synthesize("go to picture number five")
    other, _ = Speaker(voice="marin").synthesize("go to picture number five")
    # eSpeak's output length wobbles by a few ms between calls; the voices differ more.
    assert abs(len(unknown) - len(default)) < 0.05 * len(default)
    assert unknown[:20_000] != other[:20_000]


@pytest.mark.parametrize("speed", [0.5, 1.5])
def test_speed_changes_the_duration(speed: float) -> None:
    normal, _ = Speaker().synthesize("go to picture number five")
    changed, _ = Speaker(speed=speed).synthesize("go to picture number five")
    assert (len(changed) < len(normal)) == (speed > 1)


def test_empty_text_is_empty_audio() -> None:
    assert Speaker().synthesize("   ") == (b"", 22050)
