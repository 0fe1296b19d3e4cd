"""The acoustic model: DeepSpeech2's convolutional front, stacked bidirectional LSTMs, CTC output."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class ModelConfig:
    conv_channels: int = 32
    conv_kernel: list[int] = field(default_factory=lambda: [5, 11])  # (time, frequency)
    # Strides of the two convolutions as (time, frequency); time strides multiply to 2.
    conv_strides: list[list[int]] = field(default_factory=lambda: [[2, 2], [1, 2]])
    rnn_layers: int = 3
    rnn_hidden: int = 256
    dropout: float = 0.1


class ConvFront(nn.Module):
    """Two 2-D convolutions over (time, frequency) with batch norm and ReLU."""

    def __init__(self, config: ModelConfig, n_mels: int):
        super().__init__()
        kernel_time, kernel_freq = config.conv_kernel
        layers: list[nn.Module] = []
        in_channels, freq = 1, n_mels
        for stride in config.conv_strides:
            layers += [
                nn.Conv2d(in_channels, config.conv_channels, (kernel_time, kernel_freq), stride=tuple(stride),
                          padding=(kernel_time // 2, kernel_freq // 2), bias=False),
                nn.BatchNorm2d(config.conv_channels),
                nn.ReLU(inplace=True),
            ]
            in_channels, freq = config.conv_channels, (freq + 2 * (kernel_freq // 2) - kernel_freq) // stride[1] + 1
        self.layers = nn.Sequential(*layers)
        self.kernel_time = kernel_time
        self.time_strides = [stride[0] for stride in config.conv_strides]
        self.output_size = config.conv_channels * freq

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for stride in self.time_strides:
            lengths = (lengths + 2 * (self.kernel_time // 2) - self.kernel_time) // stride + 1
        return lengths

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mels) -> (batch, frames', channels * freq')."""
        x = self.layers(features.unsqueeze(1))  # (batch, channels, frames', freq')
        batch, channels, frames, freq = x.shape
        return x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (batch, time, ...) within its own length, leaving padding in place."""
    time = torch.arange(x.shape[1], device=x.device)
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)
    return x.gather(1, index[:, :, None].expand_as(x))


class BidirectionalLSTM(nn.Module):
    """A bidirectional LSTM layer on padded batches whose outputs equal a packed sequence's.

    The forward pass reads padding only after each utterance's last frame; the backward
    pass reads each utterance reversed within its length, so padding never reaches a
    valid frame. On the CPU this runs several times faster than packed sequences.
    """

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.forward_rnn = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.backward_rnn = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        forward, _ = self.forward_rnn(x)
        backward, _ = self.backward_rnn(reverse_padded(x, lengths))
        return torch.cat([forward, reverse_padded(backward, lengths)], dim=-1)


class AcousticModel(nn.Module):
    """Log-mel features -> per-frame log-probabilities over the vocabulary."""

    def __init__(self, config: ModelConfig, n_mels: int, vocab_size: int):
        super().__init__()
        self.config = config
        self.conv = ConvFront(config, n_mels)
        self.rnns = nn.ModuleList(
            BidirectionalLSTM(self.conv.output_size if layer == 0 else 2 * config.rnn_hidden, config.rnn_hidden)
            for layer in range(config.rnn_layers)
        )
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(2 * config.rnn_hidden, vocab_size)

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        return self.conv.output_lengths(feature_lengths)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns log-probabilities (batch, frames, vocab) and each utterance's frame count."""
        x = self.conv(features)
        lengths = self.output_lengths(feature_lengths).clamp(min=1, max=x.shape[1])
        for layer, rnn in enumerate(self.rnns):
            x = rnn(self.dropout(x) if layer > 0 else x, lengths)
        logits = self.output(self.dropout(x))
        return logits.float().log_softmax(dim=-1), lengths
