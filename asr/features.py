"""The acoustic front end: log-mel filterbanks and SpecAugment as a module on the device.

torchaudio is confined to this module, so the front end can be swapped without touching
the rest; ``tests/test_features.py`` holds its output against librosa's.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torchaudio
from torch import nn

from asr.feature_config import LOG_FLOOR, FeatureConfig

EQ_POINTS = 5  # a random EQ curve's free points across the mel bins: broad tilts and humps, as channels differ (features.random_eq_db)


def reflect_pad_each(waveforms: torch.Tensor, lengths: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad every row by ``pad`` samples on both sides with reflections of its own ends.

    A centred STFT over a zero-padded batch would see the padding in an utterance's last
    frames; padding each row at its own end gives every utterance the features it has alone.
    Rows shorter than ``pad + 1`` samples are reflected as far as they reach, then clamped.
    """
    positions = torch.arange(waveforms.shape[1] + 2 * pad, device=waveforms.device) - pad
    last = (lengths - 1).clamp(min=0)[:, None]
    index = positions.abs().expand(len(lengths), -1)
    index = torch.where(index > last, 2 * last - index, index).clamp(min=0)
    index = torch.minimum(index, last)
    return waveforms.gather(1, index)


def random_masks(lengths: torch.Tensor, size: int, count: int, max_width: torch.Tensor) -> torch.Tensor:
    """(batch, size) boolean mask of ``count`` random bands per row, each up to that row's ``max_width``
    wide and inside its first ``lengths`` positions (SpecAugment's masking)."""
    batch = len(lengths)
    widths = (torch.rand(batch, count, device=lengths.device) * (max_width[:, None] + 1)).long()
    starts = (torch.rand(batch, count, device=lengths.device) * (lengths[:, None] - widths + 1).clamp(min=1)).long()
    position = torch.arange(size, device=lengths.device)[None, None, :]
    inside = (position >= starts[:, :, None]) & (position < (starts + widths)[:, :, None])
    return inside.any(dim=1)


class LogMelFrontend(nn.Module):
    """Waveforms (batch, samples) -> normalised log-mel features (batch, frames, n_mels)."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        # Centring is done by reflect_pad_each, one utterance at a time.
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, n_mels=config.n_mels, power=2.0, center=False,
            norm="slaney", mel_scale="slaney",
        )
        prior = torch.tensor([config.prior_mean, config.prior_std]) if config.prior_mean else torch.empty(0)
        self.register_buffer("prior", prior, persistent=False)  # on the device with the module; the config keeps it

    @torch.autocast(device_type="cuda", enabled=False)
    @torch.autocast(device_type="cpu", enabled=False)
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features, frame_lengths = self.log_mel(waveforms, lengths, recolour=self.training)
        prior = None
        if self.config.prior_frames > 0:
            if not len(self.prior):
                raise ValueError("features.prior_frames needs prior_mean and prior_std (see prior_statistics)")
            prior = (self.prior[0], self.prior[1], self.config.prior_frames)
        features = normalize_per_utterance(features, frame_lengths, self.config.normalize == "per_feature", prior)
        if self.training:
            features = self.spec_augment(features, frame_lengths)
        return features.transpose(1, 2).contiguous(), frame_lengths

    def log_mel(self, waveforms: torch.Tensor, lengths: torch.Tensor, recolour: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features (batch, n_mels, frames) before per-bin normalisation, and each utterance's frame
        count; ``recolour`` puts each utterance through a random channel first."""
        power = self.mel_power(waveforms, lengths)
        if recolour and (self.config.random_gain_db > 0 or self.config.random_eq_db > 0):
            power = power * self.random_channel(len(power), power.device)[:, :, None]
        return torch.log(power + LOG_FLOOR), self.config.num_frames(lengths)

    def random_channel(self, batch: int, device: torch.device) -> torch.Tensor:
        """(batch, n_mels) power gains of random channels: a gain and a smooth EQ curve per utterance."""
        config = self.config
        gain_db = (torch.rand(batch, 1, device=device) * 2 - 1) * config.random_gain_db
        points_db = (torch.rand(batch, 1, EQ_POINTS, device=device) * 2 - 1) * config.random_eq_db
        curve_db = nn.functional.interpolate(points_db, size=config.n_mels, mode="linear", align_corners=True)[:, 0]
        return 10 ** ((gain_db + curve_db) / 10)

    def mel_power(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mel power spectra (batch, n_mels, frames) of a centred STFT, each row centred on its own."""
        return self.melspec(reflect_pad_each(waveforms.float(), lengths, self.config.n_fft // 2))

    def spec_augment(self, features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
        """Zero random frequency bands and time spans; time masks are sized by each utterance's length."""
        config = self.config
        batch, n_mels, frames = features.shape
        mel_count = torch.full_like(frame_lengths, n_mels)
        freq = random_masks(mel_count, n_mels, config.freq_masks, torch.full_like(frame_lengths, config.freq_mask_width))
        time_width = torch.minimum(torch.full_like(frame_lengths, config.time_mask_width),
                                   (frame_lengths * config.time_mask_max_ratio).long())
        time = random_masks(frame_lengths, frames, config.time_masks, time_width)
        return features.masked_fill(freq[:, :, None] | time[:, None, :], 0.0)


def valid_feature_frames(features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """(batch, 1, frames) mask of the frames of (batch, n_mels, frames) features inside each utterance."""
    return (torch.arange(features.shape[-1], device=features.device) < frame_lengths[:, None]).unsqueeze(1)


def normalize_per_utterance(features: torch.Tensor, frame_lengths: torch.Tensor, per_feature: bool = True,
                            prior: tuple[torch.Tensor, torch.Tensor, float] | None = None) -> torch.Tensor:
    """Zero mean, unit variance over each utterance's own frames, per mel bin or over all bins; padding is zero.

    ``prior`` (per-bin mean, per-bin standard deviation, weight in frames) pools each bin's statistics with
    that many frames of the prior's, as if they had been heard before the utterance.
    """
    valid = valid_feature_frames(features, frame_lengths)
    dims = -1 if per_feature else (-2, -1)
    count = frame_lengths.clamp(min=1).to(features.dtype)[:, None, None] * (1 if per_feature else features.shape[1])
    prior_mean, prior_std, frames = (prior[0][:, None], prior[1][:, None], prior[2]) if prior else (0.0, 0.0, 0.0)
    mean = ((features * valid).sum(dims, keepdim=True) + frames * prior_mean) / (count + frames)
    variance = ((((features - mean) * valid) ** 2).sum(dims, keepdim=True)
                + frames * (prior_std ** 2 + (prior_mean - mean) ** 2)) / (count + frames)
    return (features - mean) / (variance.sqrt() + 1e-5) * valid


def prior_statistics(frontend: LogMelFrontend, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[float], list[float]]:
    """Each mel bin's mean and standard deviation over all frames of (waveforms, lengths) batches."""
    total = square = count = 0.0
    with torch.no_grad():
        for waveforms, lengths in batches:
            features, frame_lengths = frontend.log_mel(waveforms, lengths)
            valid = valid_feature_frames(features, frame_lengths)
            total = total + (features * valid).double().sum((0, 2))
            square = square + (features.double() ** 2 * valid).sum((0, 2))
            count += float(frame_lengths.sum())
    mean = total / count
    return mean.tolist(), (square / count - mean ** 2).clamp(min=0).sqrt().tolist()
