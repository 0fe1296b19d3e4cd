"""The acoustic model: convolution arithmetic, the padded bidirectional LSTM, and mixed precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asr.model import AcousticModel, BidirectionalLSTM, ConvFront, ModelConfig, reverse_padded

SMALL = dict(conv_channels=4, rnn_layers=2, rnn_hidden=16, dropout=0.0)


def conv_arithmetic(frames: int, kernel: int, strides: list[int]) -> int:
    """PyTorch's Conv2d output size with padding kernel // 2."""
    for stride in strides:
        frames = (frames + 2 * (kernel // 2) - kernel) // stride + 1
    return frames


@pytest.mark.parametrize("kernel, strides", [(5, [[2, 2], [1, 2]]), (11, [[2, 2], [2, 1]]), (3, [[1, 1], [1, 3]])])
def test_output_shape_and_lengths_follow_conv_arithmetic(kernel, strides):
    config = ModelConfig(conv_kernel=[kernel, 7], conv_strides=strides, **SMALL)
    model = AcousticModel(config, n_mels=40, vocab_size=29).eval()
    lengths = torch.tensor([57, 40, 13, 1])
    log_probs, out_lengths = model(torch.randn(4, 57, 40), lengths)
    time_strides = [s[0] for s in strides]
    expected = [conv_arithmetic(int(n), kernel, time_strides) for n in lengths]
    assert log_probs.shape == (4, expected[0], 29)
    assert out_lengths.tolist() == expected
    assert model.output_lengths(lengths).tolist() == expected
    # The real convolution output has exactly that many frames.
    assert model.conv(torch.randn(1, 57, 40)).shape[1] == expected[0]
    # Frequency arithmetic: the first RNN's input size matches what the convolutions produce.
    assert model.conv(torch.randn(1, 57, 40)).shape[2] == model.conv.output_size
    assert log_probs.dtype == torch.float32
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(4, expected[0]))


def test_default_front_halves_time():
    conv = ConvFront(ModelConfig(), n_mels=80)
    lengths = torch.arange(1, 300)
    assert torch.equal(conv.output_lengths(lengths), (lengths - 1) // 2 + 1)
    assert conv.output_size == 32 * 20  # 80 mel bins / 2 / 2


def test_reverse_padded():
    x = torch.arange(10.0).reshape(2, 5, 1)
    out = reverse_padded(x, torch.tensor([5, 3]))
    assert out[..., 0].tolist() == [[4, 3, 2, 1, 0], [7, 6, 5, 8, 9]]
    assert torch.equal(reverse_padded(out, torch.tensor([5, 3])), x)


def packed_reference(layer: BidirectionalLSTM) -> nn.LSTM:
    """nn.LSTM(bidirectional=True) with the layer's two directions' weights."""
    forward, backward = layer.forward_rnn, layer.backward_rnn
    reference = nn.LSTM(forward.input_size, forward.hidden_size, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(forward, f"{name}_l0"))
            getattr(reference, f"{name}_l0_reverse").copy_(getattr(backward, f"{name}_l0"))
    return reference


def test_bidirectional_lstm_equals_packed_sequences():
    torch.manual_seed(0)
    layer = BidirectionalLSTM(6, 8)
    lengths = torch.tensor([9, 4, 7, 1])
    x = torch.randn(4, 9, 6)
    out = layer(x, lengths)
    assert out.shape == (4, 9, 16)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = nn.utils.rnn.pad_packed_sequence(packed_reference(layer)(packed)[0], batch_first=True)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[row, :n], expected[row, :n], atol=1e-5, rtol=0)
    # The backward half of the first output frame summarises the whole utterance, not the padding.
    torch.testing.assert_close(out[1, 0, 8:], expected[1, 0, 8:], atol=1e-5, rtol=0)


def test_padding_content_does_not_change_valid_outputs():
    torch.manual_seed(1)
    model = AcousticModel(ModelConfig(**SMALL), n_mels=20, vocab_size=29).eval()
    features = torch.randn(3, 40, 20)
    lengths = torch.tensor([40, 25, 12])
    out, out_lengths = model(features, lengths)
    noisy = features.clone()
    for row, n in enumerate(lengths.tolist()):
        noisy[row, n:] = torch.randn_like(noisy[row, n:]) * 100
    noisy_out, _ = model(noisy, lengths)
    # The convolutions see a few padded frames at the edge (kernel 5, stride 2): only the
    # output frames whose receptive field lies inside the utterance are compared. With zero
    # padding (what the front end gives) the comparison covers all valid frames, below.
    for row, n in enumerate(out_lengths.tolist()):
        inside = (lengths[row].item() - 2 - 2) // 2  # conv 1 reaches 2 frames right, conv 2 one more frame of conv 1
        assert inside >= n - 2
        torch.testing.assert_close(noisy_out[row, :inside], out[row, :inside], atol=1e-5, rtol=0)
    # Alone vs in a zero-padded batch: identical on every valid frame.
    zero_padded = features.clone()
    for row, n in enumerate(lengths.tolist()):
        zero_padded[row, n:] = 0
    batched, _ = model(zero_padded, lengths)
    for row, n in enumerate(lengths.tolist()):
        alone, alone_lengths = model(features[row:row + 1, :n], lengths[row:row + 1])
        assert alone_lengths.item() == out_lengths[row]
        torch.testing.assert_close(batched[row, :out_lengths[row]], alone[0], atol=1e-5, rtol=0)


def test_dropout_only_in_training():
    torch.manual_seed(2)
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=2, rnn_hidden=16, dropout=0.5), 20, 29)
    features, lengths = torch.randn(2, 30, 20), torch.tensor([30, 20])
    model.eval()
    assert torch.equal(model(features, lengths)[0], model(features, lengths)[0])
    model.train()
    assert not torch.equal(model(features, lengths)[0], model(features, lengths)[0])


def test_bf16_autocast_forward_and_backward_on_cpu():
    torch.manual_seed(3)
    model = AcousticModel(ModelConfig(**SMALL), n_mels=20, vocab_size=29).train()
    dtypes = {}
    model.rnns[0].register_forward_hook(lambda module, inputs, output: dtypes.__setitem__("rnn", output.dtype))
    features, lengths = torch.randn(2, 30, 20), torch.tensor([30, 22])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        log_probs, out_lengths = model(features, lengths)
    assert dtypes["rnn"] == torch.bfloat16, "autocast did not reach the LSTMs"
    assert log_probs.dtype == torch.float32  # log-softmax for CTC is in float32
    targets = torch.tensor([[3, 4, 5], [6, 7, 0]])
    loss = nn.CTCLoss(blank=0, reduction="sum")(log_probs.transpose(0, 1), targets, out_lengths, torch.tensor([3, 2]))
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
