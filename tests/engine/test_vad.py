"""Turn detection on audio the project synthesises itself (see recordings.py)."""

from pathlib import Path

import numpy as np
import pytest

from tests.engine.recordings import RATE, Studio, Take
from voice.engine.vad import (
    MAX_TURN_MS,
    SpeechPaused,
    SpeechStarted,
    SpeechStopped,
    VoiceActivityDetector,
    _noise_floor,
)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Studio:
    return Studio(Path(tmp_path_factory.mktemp("vad-recordings")))


def _speech_bounds(pcm: bytes) -> tuple[int, int]:
    """Where the synthetic speech really starts and ends, in ms (no noise in the take)."""
    samples = np.abs(np.frombuffer(pcm, dtype="<i2"))
    loud = np.nonzero(samples > 300)[0]
    return int(loud[0]) * 1000 // RATE, int(loud[-1]) * 1000 // RATE


def _run(vad: VoiceActivityDetector, pcm: bytes, chunk: int = 640, *, pauses: bool = False) -> list:
    """The turn events; pauses (a turn's early notice, see below) only when asked for."""
    events = []
    for i in range(0, len(pcm), chunk):
        events += vad.feed(pcm[i : i + chunk])
    return [e for e in events if pauses or not isinstance(e, SpeechPaused)]


def test_one_utterance_gives_one_start_and_one_stop(studio: Studio) -> None:
    pcm = studio.pcm(Take("show me the next picture", voice="marin", lead_ms=1000, tail_ms=1000))
    speech_start, speech_end = _speech_bounds(pcm)
    events = _run(VoiceActivityDetector(prefix_padding_ms=300, silence_duration_ms=500), pcm)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert abs(started.audio_start_ms - (speech_start - 300)) <= 90
    assert abs(stopped.audio_end_ms - (speech_end + 500)) <= 90
    # The utterance runs from the padded start to the stop, 32 bytes a millisecond.
    expected = (stopped.audio_end_ms - started.audio_start_ms) * 32
    assert abs(len(stopped.audio) - expected) <= 64


def test_a_pause_announces_the_end_with_the_speech_to_recognise(studio: Studio) -> None:
    """Part-way into the final silence the detector reports a pause carrying the speech
    so far; the silence holds, so the turn's speech is those very bytes and recognition
    started at the pause is the turn's recognition. (A gap inside the phrase may bring
    an earlier pause: the speaker went on, so it counts for nothing.)"""
    pcm = studio.pcm(Take("show me the next picture", voice="marin", lead_ms=1000, tail_ms=1000))
    _, speech_end = _speech_bounds(pcm)
    vad = VoiceActivityDetector(prefix_padding_ms=300, silence_duration_ms=500)
    events = _run(vad, pcm, pauses=True)
    assert isinstance(events[0], SpeechStarted) and isinstance(events[-1], SpeechStopped)
    assert all(isinstance(e, SpeechPaused) for e in events[1:-1]) and len(events) >= 3
    started, paused, stopped = events[0], events[-2], events[-1]
    assert vad.pause_ms == 250  # half-way: 300 ms ahead of the end would be 200
    assert abs(paused.audio_ms - (speech_end + 250)) <= 90
    assert abs(stopped.audio_end_ms - paused.audio_ms - 250) < 30  # whole 30 ms frames
    assert stopped.speech == paused.speech
    assert len(paused.speech) == (paused.audio_ms - started.audio_start_ms) * 32
    assert stopped.audio.startswith(stopped.speech)
    assert len(stopped.audio) - len(stopped.speech) == (stopped.audio_end_ms - paused.audio_ms) * 32


def test_speech_after_a_pause_is_part_of_the_turn(studio: Studio) -> None:
    """A speaker who pauses and goes on: the pause is forgotten, the turn's speech runs
    to the end of the second part, and a new pause comes before the stop."""
    first = studio.pcm(Take("open", voice="coral", lead_ms=600, tail_ms=0))
    second = studio.pcm(Take("image three", voice="coral", lead_ms=0, tail_ms=1000))
    gap = bytes(400 * 32)  # longer than the pause (250 ms), shorter than the silence
    vad = VoiceActivityDetector(silence_duration_ms=500)
    events = _run(vad, first + gap + second, pauses=True)
    assert [type(e) for e in events] == [SpeechStarted, SpeechPaused, SpeechPaused, SpeechStopped]
    started, early, late, stopped = events
    second_starts_ms = (len(first) + len(gap)) // 32
    _, second_ends_ms = _speech_bounds(second)
    assert early.audio_ms < second_starts_ms
    assert late.audio_ms > second_starts_ms + second_ends_ms  # after the last word
    assert stopped.speech == late.speech
    assert stopped.speech.startswith(early.speech)
    assert len(stopped.speech) == (late.audio_ms - started.audio_start_ms) * 32


def test_speech_that_never_stops_is_cut_into_turns_of_at_most_max_turn_ms(
    studio: Studio,
) -> None:
    """A speaker who never pauses long enough used to grow one turn for the whole call:
    the buffer was only trimmed between turns. Now a turn ends at MAX_TURN_MS and the
    speech that goes on is the next turn, so no turn holds more than that."""
    phrase = studio.pcm(Take("show me the next picture", voice="marin", lead_ms=0, tail_ms=100))
    speech = phrase * (75_000 * 32 // len(phrase) + 1)  # 75 s, no pause near 500 ms
    pcm = bytes(1000 * 32) + speech + bytes(1000 * 32)
    vad = VoiceActivityDetector(silence_duration_ms=500)
    events = []
    largest = 0
    for i in range(0, len(pcm), 640):
        events += [e for e in vad.feed(pcm[i : i + 640]) if not isinstance(e, SpeechPaused)]
        largest = max(largest, len(vad._buffer))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 3, events
    turns = [
        (started.audio_start_ms, stopped)
        for started, stopped in zip(events[0::2], events[1::2], strict=True)
        if isinstance(started, SpeechStarted) and isinstance(stopped, SpeechStopped)
    ]
    lengths = [stopped.audio_end_ms - start for start, stopped in turns]
    # The first two turns were cut at the cap; the speech went on into the next turn.
    assert lengths[:2] == [MAX_TURN_MS, MAX_TURN_MS] and lengths[2] <= MAX_TURN_MS
    for (_, stopped), length in zip(turns, lengths, strict=True):
        assert len(stopped.audio) == length * 32
    assert turns[1][0] - turns[0][1].audio_end_ms < 300
    assert largest <= (MAX_TURN_MS + 30) * 32


def test_commit_recognises_everything_buffered(studio: Studio) -> None:
    """A turn ended by hand during a pause recognises the whole buffer, not the pause's."""
    pcm = studio.pcm(Take("show me the last picture", voice="marin", tail_ms=350))
    vad = VoiceActivityDetector(silence_duration_ms=500)
    assert [type(e) for e in vad.feed(pcm)] == [SpeechStarted, SpeechPaused]
    stopped = vad.commit()
    assert stopped is not None and stopped.speech == stopped.audio


@pytest.mark.parametrize("padding", [0, 200, 600])
def test_prefix_padding_moves_the_start(studio: Studio, padding: int) -> None:
    pcm = studio.pcm(Take("go back", voice="coral", lead_ms=1000))
    speech_start, _ = _speech_bounds(pcm)
    started = _run(VoiceActivityDetector(prefix_padding_ms=padding), pcm)[0]
    assert isinstance(started, SpeechStarted)
    assert abs(started.audio_start_ms - (speech_start - padding)) <= 90


@pytest.mark.parametrize("voice", ["verse", "marin", "shimmer", "coral"])
def test_the_first_word_after_a_silent_room_is_kept(studio: Studio, voice: str) -> None:
    """Digital silence says nothing of the background: the first word's quiet onset
    ("go") must not become the noise floor that cuts it off."""
    take = Take("go to the first picture", voice=voice, speed=1.2, lead_ms=0)
    pcm = bytes(400 * 32) + studio.pcm(take)
    speech_start, _ = _speech_bounds(pcm)
    started = _run(VoiceActivityDetector(prefix_padding_ms=300), pcm)[0]
    assert isinstance(started, SpeechStarted)
    assert abs(started.audio_start_ms - (speech_start - 300)) <= 90


def test_silence_duration_decides_when_the_turn_ends(studio: Studio) -> None:
    pcm = studio.pcm(Take("first image", voice="marin", tail_ms=1500))
    _, speech_end = _speech_bounds(pcm)
    short = _run(VoiceActivityDetector(silence_duration_ms=400), pcm)[-1]
    long = _run(VoiceActivityDetector(silence_duration_ms=1000), pcm)[-1]
    assert isinstance(short, SpeechStopped) and isinstance(long, SpeechStopped)
    # The quiet tail of the last word is a frame or more either side of audible.
    assert abs(short.audio_end_ms - (speech_end + 400)) <= 150
    assert abs(long.audio_end_ms - (speech_end + 1000)) <= 150
    assert abs((long.audio_end_ms - short.audio_end_ms) - 600) <= 30


def test_two_utterances_are_two_turns_with_stream_times(studio: Studio) -> None:
    first = studio.pcm(Take("next image", voice="marin", lead_ms=300, tail_ms=1000))
    second = studio.pcm(Take("go back", voice="coral", lead_ms=300, tail_ms=1000))
    events = _run(VoiceActivityDetector(), first + second)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped] * 2
    offset_ms = len(first) // 32
    assert events[2].audio_start_ms > offset_ms - 300
    assert events[1].audio_end_ms < events[2].audio_start_ms


def test_silence_and_steady_noise_open_no_turn() -> None:
    rng = np.random.default_rng(1)
    silence = bytes(RATE * 2 * 2)
    noise = (rng.standard_normal(RATE * 3) * 300).astype("<i2").tobytes()
    assert _run(VoiceActivityDetector(), silence + noise) == []


def test_speech_is_found_in_background_noise(studio: Studio) -> None:
    pcm = studio.pcm(Take("open image three", voice="shimmer", noise="pink", snr_db=15))
    events = _run(VoiceActivityDetector(), pcm)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_commit_ends_the_turn_now_and_clear_drops_it(studio: Studio) -> None:
    pcm = studio.pcm(Take("show me the last picture", voice="marin", tail_ms=0))
    vad = VoiceActivityDetector()
    events = vad.feed(pcm[: len(pcm) * 3 // 4])
    assert [type(e) for e in events] == [SpeechStarted]
    stopped = vad.commit()
    assert stopped is not None and stopped.audio_end_ms == len(pcm) * 3 // 4 // 32
    assert vad.commit() is None  # nothing left after the commit

    vad = VoiceActivityDetector()
    vad.feed(pcm[: len(pcm) // 2])
    vad.clear()
    assert vad.commit() is None
    assert vad.feed(bytes(3200)) == []


def test_commit_without_vad_turn_returns_the_whole_buffer() -> None:
    vad = VoiceActivityDetector()
    vad.feed(bytes(16_000))  # half a second of silence, any chunking
    vad.feed(bytes(1000))
    stopped = vad.commit()
    assert stopped is not None and len(stopped.audio) == 17_000
    assert stopped.audio_end_ms == 17_000 // 32


def test_threshold_changes_sensitivity(studio: Studio) -> None:
    pcm = studio.pcm(Take("go back", voice="marin", noise="white", snr_db=6, seed=3))
    lenient = _run(VoiceActivityDetector(threshold=0.0), pcm)
    strict = _run(VoiceActivityDetector(threshold=1.0), pcm)
    assert len(lenient) >= 1
    assert len(strict) <= len(lenient)


@pytest.mark.parametrize("count", [1, 2, 9, 10, 11, 57, 100])
def test_the_noise_floor_is_numpys_tenth_percentile(count: int) -> None:
    """The floor is worked out in plain Python for speed; it must be the same figure
    np.percentile gives (linear interpolation), with ties and odd sizes."""
    rng = np.random.default_rng(count)
    energies = list(np.round(rng.gamma(2.0, 150.0, size=count), 1))
    energies[: count // 3] = [energies[0]] * (count // 3)  # repeated values
    assert _noise_floor(energies) == pytest.approx(np.percentile(energies, 10), rel=1e-12)
