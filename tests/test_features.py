"""The log-mel front end: shapes, normalisation, SpecAugment, batching, and agreement with librosa."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from asr.audio import load_audio
from asr.feature_config import LOG_FLOOR, FeatureConfig
from asr.features import LogMelFrontend, normalize_per_utterance
from helpers import FSDD, SAMPLES


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(SAMPLES / "LJ001-0002.flac")  # 1.9 s at 16 kHz


@pytest.fixture(scope="module")
def digit() -> np.ndarray:
    return load_audio(FSDD / "recordings" / "3_jackson_0.wav")


def frontend(**overrides) -> LogMelFrontend:
    return LogMelFrontend(FeatureConfig(**overrides))


def batch_of(*clips: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips])
    waveforms = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        waveforms[row, :len(clip)] = torch.from_numpy(clip)
    return waveforms, lengths


def test_config_derived_sizes():
    config = FeatureConfig()
    assert (config.win_length, config.hop_length) == (400, 160)
    assert config.num_frames(16_000) == 101
    assert torch.equal(config.num_frames(torch.tensor([0, 159, 160, 16_001])), torch.tensor([1, 1, 2, 101]))


@pytest.mark.parametrize("samples", [400, 1600, 16_001, 30_393])
def test_output_shape_and_lengths(samples):
    module = frontend().eval()
    features, lengths = module(torch.randn(2, samples) * 0.1, torch.tensor([samples, samples // 2]))
    assert features.shape == (2, samples // 160 + 1, 80)
    assert features.dtype == torch.float32
    assert lengths.tolist() == [samples // 160 + 1, (samples // 2) // 160 + 1]


def test_eval_mode_is_deterministic_and_unmasked(speech):
    module = frontend().eval()  # default config has SpecAugment on; eval must not apply it
    waveforms, lengths = batch_of(speech)
    first, _ = module(waveforms, lengths)
    second, _ = module(waveforms, lengths)
    assert torch.equal(first, second)
    assert not (first[0] == 0).all(dim=0).any(), "a mel bin is zeroed in eval mode"
    assert not (first[0] == 0).all(dim=1).any(), "a frame is zeroed in eval mode"
    unmasked, _ = frontend(freq_masks=0, time_masks=0).train()(waveforms, lengths)
    assert torch.equal(first, unmasked), "eval output should be the unaugmented training output"


def test_train_mode_applies_masks(speech):
    torch.manual_seed(0)
    module = frontend(freq_masks=2, freq_mask_width=27, time_masks=2, time_mask_width=40,
                      time_mask_max_ratio=0.2).train()
    waveforms, lengths = batch_of(*[speech] * 4)
    masked, _ = module(waveforms, lengths)
    clean, _ = frontend().eval()(waveforms, lengths)
    zero_bins = (masked == 0).all(dim=1)  # (batch, n_mels): mel bins zeroed over every frame
    zero_frames = (masked == 0).all(dim=2)  # (batch, frames)
    assert zero_bins.any(dim=1).all(), "each utterance should lose some mel bins"
    assert zero_frames.any(dim=1).all(), "each utterance should lose some frames"
    # Masks draw independently per utterance: identical inputs end up masked differently.
    assert not torch.equal(masked[0], masked[1])
    # Outside the masks the features are the clean ones.
    keep = ~zero_bins[:, None, :] & ~zero_frames[:, :, None]
    torch.testing.assert_close(masked[keep], clean[keep])
    # No more than 2 masks of fewer than 27 bins / 0.2 * frames frames each.
    assert zero_bins.sum(dim=1).max() <= 2 * 26
    assert zero_frames.sum(dim=1).max() <= 2 * int(0.2 * masked.shape[1])


def test_random_channel_gives_each_utterance_a_gain_and_a_smooth_eq_curve(speech):
    module = frontend(random_gain_db=10.0, random_eq_db=6.0, n_mels=81).train()  # EQ points on bins 0, 20, ..., 80
    waveforms, lengths = batch_of(*[speech] * 4)
    torch.manual_seed(0)
    coloured, _ = module.log_mel(waveforms, lengths, recolour=True)
    clean, _ = module.log_mel(waveforms, lengths)
    power, coloured_power = clean.double().exp() - LOG_FLOOR, coloured.double().exp() - LOG_FLOOR
    loud = power > 1e-5  # where the power survives the log floor's rounding
    shift_db = 10 * torch.log10(coloured_power / power).float()
    per_bin = torch.where(loud, shift_db, torch.nan).nanmedian(dim=2).values  # (batch, n_mels)
    assert loud.any(dim=2).all()
    torch.testing.assert_close(shift_db[loud], per_bin[:, :, None].expand_as(shift_db)[loud], atol=1e-3, rtol=0)
    assert per_bin.abs().max() <= 16.0 + 1e-3
    assert not torch.allclose(per_bin[0], per_bin[1]), "each utterance draws its own channel"
    # Linear between the EQ points: the curve bends only at the interior points 20, 40 and 60.
    bends = (per_bin[:, 2:] - 2 * per_bin[:, 1:-1] + per_bin[:, :-2]).abs() > 1e-3
    assert set(torch.nonzero(bends)[:, 1].add(1).tolist()) <= {20, 40, 60}
    # Outside training, and in the forward pass of an evaluating module, nothing is coloured.
    plain, _ = frontend(freq_masks=0, time_masks=0, n_mels=81).eval()(waveforms, lengths)
    evaluated, _ = frontend(random_gain_db=10.0, random_eq_db=6.0, n_mels=81).eval()(waveforms, lengths)
    assert torch.equal(evaluated, plain)


def test_time_masks_are_limited_by_each_utterances_own_length(speech):
    """``time_mask_max_ratio`` promises no more than that fraction of an utterance's frames per time mask.

    A short utterance batched with a long one must not lose more of its own frames than
    that; masks sized from the padded batch width break the promise.
    """
    short = speech[:16_000]  # 101 frames: one 5% time mask may cover at most 5 of them
    long = np.concatenate([speech, speech[:16_000]])  # 291 frames
    waveforms, lengths = batch_of(*[short] * 31, long)  # every row draws its own mask
    module = frontend(freq_masks=0, time_masks=1, time_mask_width=40, time_mask_max_ratio=0.05).train()
    torch.manual_seed(0)
    features, frame_lengths = module(waveforms, lengths)
    assert (frame_lengths[:31] == 101).all()
    masked = (features[:31, :101] == 0).all(dim=2).sum(dim=1)  # masked frames of each short row
    assert masked.max() <= int(0.05 * 101), (
        f"a 5% time mask hid {int(masked.max())} of a short utterance's 101 frames: masks are sized "
        "(and placed) by the padded batch width, not each utterance's own length")


def test_normalisation_over_valid_frames_and_zero_padding(speech, digit):
    waveforms, lengths = batch_of(speech, digit)
    features, frame_lengths = frontend().eval()(waveforms, lengths)
    for row, n in enumerate(frame_lengths.tolist()):
        valid = features[row, :n]
        torch.testing.assert_close(valid.mean(dim=0), torch.zeros(80), atol=1e-4, rtol=0)
        torch.testing.assert_close(valid.std(dim=0, unbiased=False), torch.ones(80), atol=1e-2, rtol=0)
        assert (features[row, n:] == 0).all()
    assert frame_lengths[1] < features.shape[1], "the second clip should be padded"


def test_normalize_per_utterance_directly():
    features = torch.randn(2, 3, 10) * 5 + 7
    out = normalize_per_utterance(features, torch.tensor([10, 4]))
    torch.testing.assert_close(out[1, :, :4].mean(-1), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, :4].std(-1, unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    assert (out[1, :, 4:] == 0).all()
    # Padding content never reaches the valid frames.
    changed = features.clone()
    changed[1, :, 4:] = 1e6
    assert torch.equal(normalize_per_utterance(changed, torch.tensor([10, 4])), out)


def test_a_prior_pools_each_bins_statistics_with_that_many_frames_of_its_own():
    """With a prior of mean m and deviation s weighing two frames, an utterance is normalised as if two frames,
    m - s and m + s, had been heard with it; a prior of no weight changes nothing."""
    features = torch.randn(2, 3, 10) * 5 + 7
    lengths = torch.tensor([10, 4])
    prior_mean, prior_std = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 2.0, 1.0])
    out = normalize_per_utterance(features, lengths, prior=(prior_mean, prior_std, 2.0))
    for row, n in enumerate(lengths.tolist()):
        pooled = torch.cat([features[row, :, :n], (prior_mean - prior_std)[:, None], (prior_mean + prior_std)[:, None]], 1)
        mean, std = pooled.mean(-1, keepdim=True), pooled.std(-1, unbiased=False, keepdim=True)
        torch.testing.assert_close(out[row, :, :n], (features[row, :, :n] - mean) / (std + 1e-5))
    assert (out[1, :, 4:] == 0).all()
    torch.testing.assert_close(normalize_per_utterance(features, lengths, prior=(prior_mean, prior_std, 0.0)),
                               normalize_per_utterance(features, lengths))


def test_normalizing_over_all_features_keeps_the_spectral_shape():
    """One mean and variance per utterance: a gain (an offset in log power) is removed, while the
    differences between bins, all a word cut to its speech has to tell it from another, stay."""
    features = torch.randn(2, 3, 10) * 5 + 7
    out = normalize_per_utterance(features, torch.tensor([10, 4]), per_feature=False)
    valid = out[1, :, :4]
    torch.testing.assert_close(valid.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(valid.std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0)
    assert (out[1, :, 4:] == 0).all()
    louder = features + 3.0
    torch.testing.assert_close(normalize_per_utterance(louder, torch.tensor([10, 4]), per_feature=False), out)
    scale = features[1, :, :4].std(unbiased=False)
    torch.testing.assert_close(valid[0] - valid[2], (features[1, 0, :4] - features[1, 2, :4]) / scale,
                               atol=1e-4, rtol=1e-4)
    per_bin = normalize_per_utterance(features, torch.tensor([10, 4]))
    assert not torch.allclose(per_bin, out, atol=1e-2), "per-bin normalisation would have given the same"


def test_frontend_normalizes_as_configured(speech):
    waveforms, lengths = batch_of(speech)
    features, frame_lengths = frontend(normalize="all_features").eval()(waveforms, lengths)
    torch.testing.assert_close(features[0].mean(), torch.tensor(0.0), atol=1e-4, rtol=0)
    bin_means = features[0].mean(dim=0)
    assert bin_means.abs().max() > 0.3, "every bin was centred: the configured normalisation was not used"


def test_padded_batch_gives_each_utterance_its_own_features(speech, digit):
    """The front end's output for an utterance must not depend on what it is batched with.

    Otherwise evaluation (batched) and transcription (one file at a time) see different
    features for the same audio, and so may give different transcripts. Today the last
    frames would differ if a centred STFT reflected the batch tensor's end instead of each
    utterance's own end, and per-utterance
    normalisation spreads any difference over every frame, so all valid frames are compared.
    """
    module = frontend().eval()
    waveforms, lengths = batch_of(speech, digit)
    batched, frame_lengths = module(waveforms, lengths)
    for row, clip in enumerate([speech, digit]):
        alone, alone_lengths = module(torch.from_numpy(clip)[None], torch.tensor([len(clip)]))
        n = int(alone_lengths[0])
        assert n == frame_lengths[row]
        difference = (batched[row, :n] - alone[0]).abs().max().item()
        assert difference < 1e-4, (
            f"utterance {row}: features in a padded batch differ from the utterance alone by {difference:.3f}")


def test_log_mel_power_matches_librosa(speech):
    module = frontend().eval()
    ours = module.mel_power(torch.from_numpy(speech)[None], torch.tensor([len(speech)]))[0].double().numpy()
    reference = librosa.feature.melspectrogram(
        y=speech.astype(np.float64), sr=16_000, n_fft=512, win_length=400, hop_length=160, n_mels=80,
        htk=False, norm="slaney", center=True, pad_mode="reflect", power=2.0)
    assert ours.shape == reference.shape == (80, len(speech) // 160 + 1)
    audible = reference > 1e-6
    assert audible.mean() > 0.5
    log_difference = np.abs(np.log(ours[audible]) - np.log(reference[audible]))
    assert log_difference.max() < 1e-2
    np.testing.assert_allclose(ours, reference, rtol=1e-3, atol=1e-6)


def test_frontend_ignores_autocast(speech):
    """Features are computed in float32 even inside a bf16 autocast region."""
    module = frontend().eval()
    waveforms, lengths = batch_of(speech)
    reference, _ = module(waveforms, lengths)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, _ = module(waveforms, lengths)
    assert features.dtype == torch.float32
    torch.testing.assert_close(features, reference)
