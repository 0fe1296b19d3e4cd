"""Words cut out of connected speech at their aligned boundaries (asr cut-words)."""

from __future__ import annotations

import numpy as np
import pytest

from asr.audio import load_audio
from asr.data import read_manifest
from asr.recognizer import load_model
from asr.words import cut_words, word_boundaries
from helpers import REPO, assert_one_line_error, run_cli

SAMPLES = REPO / "data" / "samples" / "samples.jsonl"  # "two nine six six two", "yes", "five"


def test_word_boundaries_meet_halfway_between_aligned_words():
    spans = [("two", 3, 9), ("nine", 15, 20), ("six", 21, 30)]
    assert word_boundaries(spans, 40) == [("two", 0, 12), ("nine", 12, 20), ("six", 20, 40)]
    assert word_boundaries([("yes", 5, 8)], 20) == [("yes", 0, 20)]
    assert word_boundaries([], 20) == []


def offset_in(source: np.ndarray, clip: np.ndarray) -> int:
    """Where ``clip`` stands, sample for sample, in ``source``; -1 if nowhere."""
    for start in np.flatnonzero(source[: len(source) - len(clip) + 1] == clip[0]):
        if np.array_equal(source[start:start + len(clip)], clip):
            return int(start)
    return -1


@pytest.fixture(scope="module")
def bundled_model():
    return load_model(device="cpu")


def test_cut_words_cuts_each_word_in_order_from_its_own_utterance(tmp_path, bundled_model):
    assert cut_words(bundled_model, [SAMPLES], tmp_path) == 7
    clips = read_manifest(tmp_path / "words.jsonl")
    assert [clip.text for clip in clips] == ["two", "nine", "six", "six", "two", "yes", "five"]
    digits = load_audio(REPO / "data" / "samples" / "an4-cen6-mmkw-b.flac")
    offsets = []
    for clip in clips[:5]:
        samples = load_audio(clip.audio_filepath)
        assert clip.duration == pytest.approx(len(samples) / 16_000, abs=1e-3)
        assert 0.1 < clip.duration < 1.0  # one spoken digit, not the string of five
        offsets.append((offset_in(digits, samples), len(samples)))
    assert all(offset >= 0 for offset, _ in offsets), "a clip is not a stretch of its utterance's audio"
    for (offset, length), (next_offset, _) in zip(offsets, offsets[1:]):
        assert offset + length <= next_offset, "clips of neighbouring words overlap or are out of order"


def test_cut_words_keeps_only_the_words_asked_for(tmp_path, bundled_model):
    assert cut_words(bundled_model, [SAMPLES], tmp_path, words={"six", "yes"}) == 3
    clips = read_manifest(tmp_path / "words.jsonl")
    assert [clip.text for clip in clips] == ["six", "six", "yes"]
    assert all(clip.audio_filepath.parent == tmp_path / "audio" for clip in clips)


@pytest.mark.slow
def test_cli_cut_words(tmp_path):
    result = run_cli("cut-words", SAMPLES, "--out", tmp_path, "--word", "five")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'words.jsonl'}: 1 clips\n"
    (clip,) = read_manifest(tmp_path / "words.jsonl")
    assert clip.text == "five"
    missing = tmp_path / "missing.jsonl"
    assert_one_line_error(run_cli("cut-words", missing, "--out", tmp_path / "other"), missing)
