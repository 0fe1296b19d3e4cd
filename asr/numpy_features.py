"""The log-mel front end in numpy, for the ONNX runtime, which must not import torch.

It computes what ``asr.features.LogMelFrontend`` computes in inference (no random channel,
no SpecAugment): each row reflected at its own ends, a periodic Hann window centred in
``n_fft``, power spectra, Slaney mel filters with Slaney normalisation (torchaudio's
``melscale_fbanks``), the log, and per-utterance normalisation pooled with the prior.
``tests/test_onnx.py`` holds the two to a tolerance on real speech.
"""

from __future__ import annotations

import math

import numpy as np

from asr.feature_config import LOG_FLOOR, FeatureConfig

MIN_LOG_HZ = 1000.0  # the Slaney mel scale is linear below this frequency and logarithmic above
LINEAR_HZ_PER_MEL = 200.0 / 3
LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / LINEAR_HZ_PER_MEL
    logarithmic = MIN_LOG_HZ / LINEAR_HZ_PER_MEL + np.log(np.maximum(hz, MIN_LOG_HZ) / MIN_LOG_HZ) / LOG_STEP
    return np.where(hz >= MIN_LOG_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    min_log_mel = MIN_LOG_HZ / LINEAR_HZ_PER_MEL
    return np.where(mel >= min_log_mel, MIN_LOG_HZ * np.exp(LOG_STEP * (mel - min_log_mel)), LINEAR_HZ_PER_MEL * mel)


def mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters from 0 Hz to Nyquist, each scaled to unit area (Slaney)."""
    frequencies = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - frequencies[:, None]
    rising, falling = -slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(rising, falling))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def reflect_pad_each(waveforms: np.ndarray, lengths: np.ndarray, pad: int) -> np.ndarray:
    """Pad every row by ``pad`` samples on both sides with reflections of its own ends (as the torch front end does)."""
    positions = np.abs(np.arange(waveforms.shape[1] + 2 * pad) - pad)[None, :]
    last = np.maximum(lengths - 1, 0)[:, None]
    index = np.minimum(np.maximum(np.where(positions > last, 2 * last - positions, positions), 0), last)
    return np.take_along_axis(waveforms, index, axis=1)


class NumpyLogMel:
    """Waveforms (batch, samples) -> normalised log-mel features (batch, frames, n_mels), float32."""

    def __init__(self, config: FeatureConfig):
        self.config = config
        window = np.hanning(config.win_length + 1)[:-1]  # periodic, as torch.hann_window
        left = (config.n_fft - config.win_length) // 2
        self.window = np.pad(window, (left, config.n_fft - config.win_length - left))
        self.filters = mel_filters(config.sample_rate, config.n_fft, config.n_mels)
        if config.prior_frames > 0 and not config.prior_mean:
            raise ValueError("features.prior_frames needs prior_mean and prior_std (see prior_statistics)")

    def __call__(self, waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        config = self.config
        padded = reflect_pad_each(waveforms.astype(np.float64), lengths, config.n_fft // 2)
        frames = np.lib.stride_tricks.sliding_window_view(padded, config.n_fft, axis=1)[:, ::config.hop_length]
        power = np.abs(np.fft.rfft(frames * self.window, axis=-1)) ** 2
        features = np.log(power @ self.filters + LOG_FLOOR)  # (batch, frames, n_mels)
        frame_lengths = config.num_frames(lengths)
        return self.normalize(features, frame_lengths).astype(np.float32), frame_lengths

    def normalize(self, features: np.ndarray, frame_lengths: np.ndarray) -> np.ndarray:
        """Zero mean, unit variance over each utterance's own frames (pooled with the prior's), padding zero."""
        config = self.config
        valid = (np.arange(features.shape[1])[None, :] < frame_lengths[:, None])[:, :, None]
        per_feature = config.normalize == "per_feature"
        axes = (1,) if per_feature else (1, 2)
        count = np.maximum(frame_lengths, 1)[:, None, None] * (1 if per_feature else features.shape[2])
        weight = config.prior_frames
        prior_mean = np.asarray(config.prior_mean) if weight else 0.0
        prior_std = np.asarray(config.prior_std) if weight else 0.0
        mean = ((features * valid).sum(axes, keepdims=True) + weight * prior_mean) / (count + weight)
        variance = ((((features - mean) * valid) ** 2).sum(axes, keepdims=True)
                    + weight * (prior_std ** 2 + (prior_mean - mean) ** 2)) / (count + weight)
        return (features - mean) / (np.sqrt(variance) + 1e-5) * valid
