"""Waveform augmentation on a real clip: silence trimming, speed perturbation, telephone band, noise at a chosen SNR,
reproducible draws."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asr.audio import SAMPLE_RATE, load_audio
from asr.augment import (AugmentConfig, Augmentation, add_noise, change_speed, mean_power, to_narrowband, trim_silence,
                         trimmed_durations)
from asr.errors import ConfigError
from asr.schema import from_dict
from helpers import SAMPLES

CLIP = SAMPLES / "LJ001-0002.flac"


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[spectrum.argmax()])


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_changes_length_and_pitch_together(factor):
    speech = load_audio(CLIP)
    faster = change_speed(speech, factor)
    assert faster.dtype == np.float32
    assert len(faster) == pytest.approx(len(speech) / factor, rel=1e-3)
    tone = np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE).astype(np.float32)
    assert dominant_frequency(change_speed(tone, factor)) == pytest.approx(440 * factor, abs=2)


def band_energy(samples: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) ** 2
    frequencies = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


def test_narrowband_keeps_the_telephone_band_and_removes_the_rest():
    speech = load_audio(CLIP)
    narrow = to_narrowband(speech)
    assert narrow.dtype == np.float32 and len(narrow) == len(speech)
    assert band_energy(speech, 4200, 8000) > 1e-3 * band_energy(speech, 300, 3400), "the clip must have a high band"
    assert band_energy(narrow, 4200, 8000) < 1e-4 * band_energy(narrow, 300, 3400)
    assert band_energy(narrow, 300, 3400) == pytest.approx(band_energy(speech, 300, 3400), rel=0.05)


def test_narrowband_probability_is_the_share_of_utterances_band_limited():
    speech = load_audio(CLIP)[:SAMPLE_RATE]
    augmentation = Augmentation(AugmentConfig(narrowband_probability=0.5), seed=0)
    assert augmentation.active
    limited = [band_energy(augmentation(speech, 1, index), 4200, 8000) < 1e-4 * band_energy(speech, 4200, 8000)
               for index in range(40)]
    assert 10 <= sum(limited) <= 30


def quiet_ends(speech: np.ndarray, seconds: float) -> np.ndarray:
    """``speech`` with ``seconds`` of noise 50 dB under its peak before and after it."""
    ends = np.random.default_rng(0).normal(size=(2, int(seconds * SAMPLE_RATE))) * np.abs(speech).max() * 10 ** -2.5
    return np.concatenate([ends[0], speech, ends[1]]).astype(np.float32)


def test_trimming_cuts_the_quiet_ends_and_keeps_the_speech():
    speech = load_audio(CLIP)
    padded = quiet_ends(speech, 0.8)
    trimmed = trim_silence(padded, top_db=30)
    assert len(speech) - 0.15 * SAMPLE_RATE <= len(trimmed) <= len(speech) + 0.15 * SAMPLE_RATE  # librosa's 32 ms hops
    assert mean_power(trimmed) == pytest.approx(mean_power(speech), rel=0.2)
    assert len(trim_silence(np.zeros(SAMPLE_RATE, np.float32), top_db=30)) == SAMPLE_RATE  # nothing loud: all kept


def test_trim_probability_is_the_share_of_utterances_trimmed():
    padded = quiet_ends(load_audio(CLIP)[:SAMPLE_RATE], 0.5)
    augmentation = Augmentation(AugmentConfig(trim_probability=0.5), seed=0)
    assert augmentation.active
    trimmed = [len(augmentation(padded, 1, index)) < len(padded) - 0.5 * SAMPLE_RATE for index in range(40)]
    assert 10 <= sum(trimmed) <= 30


def test_speed_one_returns_the_clip_untouched():
    speech = load_audio(CLIP)
    assert change_speed(speech, 1.0) is speech


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_noise_is_mixed_at_the_requested_snr(snr_db):
    speech = load_audio(CLIP)
    noise = np.random.default_rng(0).normal(size=SAMPLE_RATE // 3).astype(np.float32)  # shorter: it loops
    noisy = add_noise(speech, noise, snr_db, np.random.default_rng(1))
    added = noisy - speech
    measured = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.05)


def test_silence_gets_no_noise():
    silence = np.zeros(1000, dtype=np.float32)
    assert not add_noise(silence, np.ones(10, dtype=np.float32), 10.0, np.random.default_rng(0)).any()


def test_longest_and_fastest_bound_what_the_speeds_draw():
    speech = load_audio(CLIP)[:SAMPLE_RATE // 2]
    config = AugmentConfig(speeds=[0.9, 1.0, 1.1])
    lengths = {len(Augmentation(config, seed=0)(speech, 1, index)) for index in range(20)}
    assert len(lengths) == 3
    assert max(lengths) == pytest.approx(config.longest(len(speech) / SAMPLE_RATE) * SAMPLE_RATE, abs=1)
    assert min(lengths) == pytest.approx(len(speech) / config.fastest, abs=1)
    assert AugmentConfig().longest(1.0) == 1.0 and AugmentConfig().fastest == 1.0


@pytest.mark.parametrize("trim_probability", [0.0, 0.5])
def test_durations_are_each_epochs_lengths_drawn_before_the_audio_is_read(tmp_path, trim_probability):
    speech = np.concatenate([np.zeros(SAMPLE_RATE // 4, np.float32), load_audio(CLIP)[:SAMPLE_RATE // 2]])
    soundfile.write(tmp_path / "quiet_first.wav", speech, SAMPLE_RATE, subtype="FLOAT")
    config = AugmentConfig(trim_probability=trim_probability, speeds=[0.9, 1.0, 1.1], narrowband_probability=0.5)
    augmentation = Augmentation(config, seed=0)
    recorded = [len(speech) / SAMPLE_RATE] * 30
    trimmed = trimmed_durations([tmp_path / "quiet_first.wav"] * 30, config.trim_top_db)
    assert trimmed[0] < recorded[0] - 0.2
    for epoch in (1, 2):
        lengths = [len(augmentation(speech, epoch, index)) / SAMPLE_RATE for index in range(30)]
        drawn = augmentation.durations(recorded, epoch, trimmed)
        assert drawn == pytest.approx(lengths, abs=1 / SAMPLE_RATE)
        distinct = len(set(np.round(drawn, 3)))
        assert distinct > 3 if trim_probability else distinct == 3, "speeds and trimming should vary"
        bounds = augmentation.durations(recorded, epoch)  # without the trimmed durations: at least as long
        assert all(length <= bound + 1 / SAMPLE_RATE for length, bound in zip(lengths, bounds))
        assert (bounds == drawn) == (trim_probability == 0)
    assert augmentation.durations(recorded, 1, trimmed) != augmentation.durations(recorded, 2, trimmed)


@pytest.fixture
def noise_dir(tmp_path):
    rng = np.random.default_rng(5)
    for name in ("hum.wav", "hiss.flac"):
        soundfile.write(tmp_path / name, rng.normal(scale=0.1, size=8000).astype(np.float32), 8000)
    (tmp_path / "notes.txt").write_text("not audio")
    return tmp_path


def test_draws_depend_only_on_seed_epoch_and_index(noise_dir):
    speech = load_audio(CLIP)
    config = AugmentConfig(speeds=[0.9, 1.0, 1.1], noise_dir=str(noise_dir), noise_probability=1.0)
    first, again = Augmentation(config, seed=0), Augmentation(config, seed=0)
    assert np.array_equal(first(speech, epoch=2, index=7), again(speech, epoch=2, index=7))
    lengths = {len(first(speech, epoch, index)) for epoch in range(1, 4) for index in range(6)}
    assert len(lengths) == 3, "all three speeds should be drawn over 18 draws"
    assert not np.array_equal(first(speech, 1, 0), Augmentation(config, seed=1)(speech, 1, 0))
    assert Augmentation(AugmentConfig(), seed=0).active is False


@pytest.mark.parametrize("values, key", [
    ({"speeds": []}, "augment.speeds"),
    ({"speeds": [0.1]}, "augment.speeds"),
    ({"noise_probability": 1.5}, "augment.noise_probability"),
    ({"narrowband_probability": -0.1}, "augment.narrowband_probability"),
    ({"snr_db": [20, 5]}, "augment.snr_db"),
    ({"trim_probability": 1.5}, "augment.trim_probability"),
    ({"trim_top_db": 0}, "augment.trim_top_db"),
    ({"snr_db": [30]}, "augment.snr_db"),
    ({"noise_dir": "/no/such/folder"}, "augment.noise_dir"),
])
def test_bad_augment_settings_name_their_key(values, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_dict(AugmentConfig, values, "config.yaml", "augment.")


def test_a_noise_folder_without_audio_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ConfigError, match="holds no audio files"):
        from_dict(AugmentConfig, {"noise_dir": str(tmp_path)}, "config.yaml", "augment.")


@pytest.mark.slow
def test_a_trimming_augmentation_makes_trimmings_imports_before_the_loader_workers_fork():
    """Each epoch's loader worker is forked afresh: what the training process has not imported, every worker
    imports again before its first batch."""
    script = ("import sys, numpy as np; from asr.augment import Augmentation, AugmentConfig, trim_silence; "
              "Augmentation(AugmentConfig(trim_probability=0.5), seed=0); before = set(sys.modules); "
              "trim_silence(np.ones(8000, dtype=np.float32), 30.0); "
              "assert set(sys.modules) == before, sorted(set(sys.modules) - before)")
    subprocess.run([sys.executable, "-c", script], check=True)
