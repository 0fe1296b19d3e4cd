"""The acoustic model: DeepSpeech2's convolutional front, stacked recurrent layers, CTC output.

The recurrent core is an LSTM, GRU or vanilla (tanh) RNN, read both ways or forward
only; a forward-only model gets DeepSpeech2's lookahead convolution over a few future
frames so that it still sees some right context.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
NORMS = ("none", "layer", "batch")


@dataclass
class ModelConfig:
    conv_channels: int = 32
    conv_kernel: list[int] = field(default_factory=lambda: [5, 11])  # (time, frequency)
    # Strides of the two convolutions as (time, frequency); time strides multiply to 2.
    conv_strides: list[list[int]] = field(default_factory=lambda: [[2, 2], [1, 2]])
    rnn_type: str = "lstm"  # lstm | gru | rnn (vanilla tanh)
    bidirectional: bool = True
    rnn_layers: int = 3
    rnn_hidden: int = 256
    norm: str = "none"  # between recurrent layers: none | layer | batch (DeepSpeech2's sequence-wise)
    lookahead: int = 20  # future frames seen by a forward-only model's lookahead convolution
    dropout: float = 0.1

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, what is wrong) for each value no model can be built from."""
        if self.rnn_type not in RNN_TYPES:
            yield "rnn_type", f"must be one of {', '.join(RNN_TYPES)}, not {self.rnn_type!r}"
        if self.norm not in NORMS:
            yield "norm", f"must be one of {', '.join(NORMS)}, not {self.norm!r}"
        for key in ("rnn_layers", "rnn_hidden", "conv_channels"):
            if getattr(self, key) < 1:
                yield key, f"must be a positive integer, not {getattr(self, key)}"
        if self.lookahead < 0:
            yield "lookahead", f"must be zero or more, not {self.lookahead}"
        if not 0 <= self.dropout < 1:
            yield "dropout", f"must be in [0, 1), not {self.dropout}"
        if len(self.conv_kernel) != 2 or min(self.conv_kernel) < 1:
            yield "conv_kernel", "must be two positive integers: [time, frequency]"
        if len(self.conv_strides) != 2 or any(len(s) != 2 or min(s) < 1 for s in self.conv_strides):
            yield "conv_strides", "must be two [time, frequency] pairs of positive integers"


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
        # Channels-last weights: oneDNN's convolutions then skip reordering, about 1.5 times faster on a CPU
        # (3 times for the first, single-channel one); loading a state dict keeps this layout.
        self.layers = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.kernel_time = kernel_time
        self.time_strides = [stride[0] for stride in config.conv_strides]
        self.output_size = config.conv_channels * freq

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for stride in self.time_strides:
            lengths = self._block_lengths(lengths, stride)
        return lengths

    def _block_lengths(self, lengths: torch.Tensor, stride: int) -> torch.Tensor:
        return (lengths + 2 * (self.kernel_time // 2) - self.kernel_time) // stride + 1

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(batch, frames, n_mels) -> (batch, frames', channels * freq').

        Each block's output past an utterance's own length is zeroed (deepspeech.pytorch's
        MaskConv), so padding, and batch norm's shift of it, never reaches valid frames.
        """
        x = (features * valid_time_steps(features, lengths)[:, :, None]).unsqueeze(1)  # (batch, 1, frames, freq)
        for block, stride in zip(range(0, len(self.layers), 3), self.time_strides):
            x = self.layers[block + 2](self.layers[block + 1](self.layers[block](x)))
            lengths = self._block_lengths(lengths, stride)
            x = x * (torch.arange(x.shape[2], device=x.device) < lengths[:, None])[:, None, :, None]
        batch, channels, frames, freq = x.shape
        return x.permute(0, 2, 1, 3).reshape(batch, frames, channels * freq)


def valid_time_steps(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(batch, time) mask of the time steps of (batch, time, ...) ``x`` inside each utterance."""
    return torch.arange(x.shape[1], device=x.device) < lengths[:, None]


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of (batch, time, ...) within its own length, leaving padding in place."""
    time = torch.arange(x.shape[1], device=x.device)
    index = torch.where(time < lengths[:, None], lengths[:, None] - 1 - time, time)
    rows = (index + x.shape[1] * torch.arange(x.shape[0], device=x.device)[:, None]).reshape(-1)
    return _PermuteFrames.apply(x, rows)


class _PermuteFrames(torch.autograd.Function):
    """Frames of (batch, time, ...) reordered by a permutation of the flattened (batch * time) rows that is
    its own inverse, so that the gradient is permuted the same way: whole rows copied with index_select,
    several times faster than ``gather``, whose backward scatters element by element."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return _permute_rows(x, rows)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (rows,) = ctx.saved_tensors
        return _permute_rows(grad, rows), None


def _permute_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *x.shape[2:]).index_select(0, rows).view(x.shape)


class RecurrentLayer(nn.Module):
    """One recurrent layer on padded batches whose outputs equal a packed sequence's.

    The forward pass reads padding only after each utterance's last frame; the backward
    pass reads each utterance reversed within its length, so padding never reaches a
    valid frame. On the CPU this runs several times faster than packed sequences.
    """

    def __init__(self, rnn_type: str, input_size: int, hidden_size: int, bidirectional: bool):
        super().__init__()
        rnn = RNN_TYPES[rnn_type]
        self.forward_rnn = rnn(input_size, hidden_size, batch_first=True)
        self.backward_rnn = rnn(input_size, hidden_size, batch_first=True) if bidirectional else None
        self.output_size = hidden_size * (2 if bidirectional else 1)
        if rnn_type == "lstm":  # forget gates start open (Gers et al., 2000): gradients flow back from the start
            for lstm in filter(None, [self.forward_rnn, self.backward_rnn]):
                for bias in (lstm.bias_ih_l0, lstm.bias_hh_l0):
                    nn.init.constant_(bias[hidden_size:2 * hidden_size], 0.5)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16:
            # cuDNN's autocast wrapper runs recurrent layers in fp16 whatever autocast's dtype (ATen's
            # cudnn/AutocastRNN.cpp), and bf16 training has no gradient scaler to keep fp16 from underflowing.
            with torch.autocast("cuda", enabled=False):
                return self.run(x.float(), lengths)
        return self.run(x, lengths)

    def run(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        forward, _ = self.forward_rnn(x)
        if self.backward_rnn is None:
            return forward
        backward, _ = self.backward_rnn(reverse_padded(x, lengths))
        return torch.cat([forward, reverse_padded(backward, lengths)], dim=-1)


class SequenceBatchNorm(nn.BatchNorm1d):
    """Batch norm over the valid frames of all utterances (DeepSpeech2's sequence-wise normalisation)."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = valid_time_steps(x, lengths)
        out = torch.zeros_like(x)
        out[mask] = super().forward(x[mask]).to(x.dtype)
        return out


class MaskedLayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return super().forward(x)


class Lookahead(nn.Module):
    """DeepSpeech2's row convolution: each frame mixes in the next ``context`` frames, feature by feature."""

    def __init__(self, size: int, context: int):
        super().__init__()
        self.context = context
        self.conv = nn.Conv1d(size, size, kernel_size=context + 1, groups=size, bias=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x * valid_time_steps(x, lengths)[:, :, None]  # a forward RNN's outputs over padding are not zero
        x = nn.functional.pad(x.transpose(1, 2), (0, self.context))
        return nn.functional.hardtanh(self.conv(x).transpose(1, 2), 0, 20)


class Dropout(nn.Dropout):
    """``nn.Dropout`` with its keep-mask drawn by thresholding uniform draws: the same Bernoulli(1 - p)
    masks, in about half the time on a CPU, where ``bernoulli_`` draws element by element."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype).mul_(1 / (1 - self.p))


class AcousticModel(nn.Module):
    """Log-mel features -> per-frame log-probabilities over the vocabulary."""

    def __init__(self, config: ModelConfig, n_mels: int, vocab_size: int):
        super().__init__()
        self.config = config
        self.conv = ConvFront(config, n_mels)
        self.rnns = nn.ModuleList()
        size = self.conv.output_size
        for _ in range(config.rnn_layers):
            self.rnns.append(RecurrentLayer(config.rnn_type, size, config.rnn_hidden, config.bidirectional))
            size = self.rnns[-1].output_size
        norm = {"none": None, "layer": MaskedLayerNorm, "batch": SequenceBatchNorm}[config.norm]
        self.norms = nn.ModuleList(norm(size) for _ in range(config.rnn_layers - 1)) if norm else None
        self.lookahead = Lookahead(size, config.lookahead) if not config.bidirectional and config.lookahead else None
        self.dropout = Dropout(config.dropout)
        self.output = nn.Linear(size, vocab_size)

    def output_lengths(self, feature_lengths: torch.Tensor) -> torch.Tensor:
        return self.conv.output_lengths(feature_lengths)

    def forward(self, features: torch.Tensor, feature_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns log-probabilities (batch, frames, vocab) and each utterance's frame count."""
        x = self.conv(features, feature_lengths)
        lengths = self.output_lengths(feature_lengths).clamp(min=1, max=x.shape[1])
        for layer, rnn in enumerate(self.rnns):
            if layer > 0:
                x = self.dropout(self.norms[layer - 1](x, lengths) if self.norms is not None else x)
            x = rnn(x, lengths)
        if self.lookahead is not None:
            x = self.lookahead(x, lengths)
        logits = self.output(self.dropout(x))
        return logits.float().log_softmax(dim=-1), lengths
