"""The acoustic front end: log-mel filterbanks and SpecAugment as a module on the device.

torchaudio is confined to this module, so the front end can be swapped without touching
the rest; ``tests/test_features.py`` holds its output against librosa's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio
from torch import nn

from asr.audio import SAMPLE_RATE


@dataclass
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE
    n_mels: int = 80
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    # SpecAugment (Park et al., 2019), applied in training only.
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.05  # no more than this fraction of frames per time mask

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    def num_frames(self, num_samples: torch.Tensor | int) -> torch.Tensor | int:
        """Frames the front end makes of so many samples (centred STFT)."""
        return num_samples // self.hop_length + 1


class LogMelFrontend(nn.Module):
    """Waveforms (batch, samples) -> normalised log-mel features (batch, frames, n_mels)."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        self.melspec = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, n_mels=config.n_mels, power=2.0, center=True,
            pad_mode="reflect", norm="slaney", mel_scale="slaney",
        )
        self.freq_masks = nn.ModuleList(
            torchaudio.transforms.FrequencyMasking(config.freq_mask_width, iid_masks=True)
            for _ in range(config.freq_masks)
        )
        self.time_masks = nn.ModuleList(
            torchaudio.transforms.TimeMasking(config.time_mask_width, iid_masks=True, p=config.time_mask_max_ratio)
            for _ in range(config.time_masks)
        )

    @torch.autocast(device_type="cuda", enabled=False)
    @torch.autocast(device_type="cpu", enabled=False)
    def forward(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frame_lengths = self.config.num_frames(lengths)
        power = self.melspec(waveforms.float())
        features = torch.log(power + 1e-6)  # (batch, n_mels, frames)
        features = normalize_per_utterance(features, frame_lengths)
        if self.training:
            # The masks take (batch, channel, freq, time) to draw one mask per utterance.
            features = features.unsqueeze(1)
            for mask in [*self.freq_masks, *self.time_masks]:
                features = mask(features)
            features = features.squeeze(1)
        return features.transpose(1, 2).contiguous(), frame_lengths


def normalize_per_utterance(features: torch.Tensor, frame_lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per mel bin over each utterance's own frames; padding is zero."""
    valid = (torch.arange(features.shape[-1], device=features.device) < frame_lengths[:, None]).unsqueeze(1)
    count = frame_lengths.clamp(min=1).to(features.dtype)[:, None, None]
    mean = (features * valid).sum(-1, keepdim=True) / count
    variance = (((features - mean) * valid) ** 2).sum(-1, keepdim=True) / count
    return (features - mean) / (variance.sqrt() + 1e-5) * valid
