"""Audio as it arrives: the segmenter closing a segment as its pause ends, the stream API, and
``asr transcribe -`` / FIFOs / ``--stream`` / ``asr listen`` on the command line."""

from __future__ import annotations

import numpy as np

from asr.audio import load_audio
from asr.segment import SegmentOptions, Segmenter
from helpers import FSDD

RATE = 16_000


def word(name: str = "3_jackson_0") -> np.ndarray:
    return load_audio(FSDD / "recordings" / f"{name}.wav")


def test_a_segment_is_given_out_as_soon_as_its_pause_has_lasted_min_pause():
    noise = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 1e-3
    speech = word()
    segmenter = Segmenter(SegmentOptions(min_pause=0.6))
    assert segmenter.accept(np.concatenate([noise, speech])) == []
    pause = np.random.default_rng(1).standard_normal(RATE).astype(np.float32) * 1e-3
    closed_at = None
    for i in range(0, len(pause), 160):  # 10 ms at a time
        if segmenter.accept(pause[i:i + 160]):
            closed_at = (i + 160) / RATE
            break
    assert closed_at is not None, "the pause never closed the segment"
    assert 0.55 <= closed_at <= 0.75, closed_at  # the pause, and at most one 0.1 s step of judging
    assert segmenter.finish() == []
