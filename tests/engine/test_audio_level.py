"""The engine's audio level for outgoing packets is aiortc's, computed faster."""

from __future__ import annotations

import av
import numpy as np
import pytest
from aiortc import rtp

from voice.engine import audio


def _frame(samples: np.ndarray, layout: str = "mono") -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(
        samples.astype("<i2").reshape(1, -1), format="s16", layout=layout
    )
    frame.sample_rate = 48_000
    return frame


def _aiortc_level(frame: av.AudioFrame) -> int:
    return int(audio.aiortc_audio_level_dbov(frame))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("scale", [0, 1, 30, 1000, 32767])
def test_the_level_is_the_one_aiortc_computes(seed: int, scale: int) -> None:
    rng = np.random.default_rng(seed)
    samples = np.clip(rng.standard_normal(960) * scale, -32768, 32767)
    frame = _frame(samples)
    assert audio.audio_level_dbov(frame) == _aiortc_level(frame)


def test_full_scale_silence_and_stereo() -> None:
    loud = _frame(np.full(960, 32767))
    silent = _frame(np.zeros(960))
    stereo = _frame(np.tile([1000, -1000], 960), layout="stereo")
    assert audio.audio_level_dbov(loud) == _aiortc_level(loud) == 0
    assert audio.audio_level_dbov(silent) == _aiortc_level(silent) == -127
    assert audio.audio_level_dbov(stereo) == _aiortc_level(stereo)


def test_aiortc_senders_use_it() -> None:
    assert rtp.compute_audio_level_dbov is audio.audio_level_dbov
