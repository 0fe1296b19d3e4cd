"""The acoustic model: convolution arithmetic, padded recurrent layers vs packed sequences, and mixed precision."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asr.model import RNN_TYPES, AcousticModel, ConvFront, Dropout, ModelConfig, RecurrentLayer, reverse_padded

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
    assert model.conv(torch.randn(1, 57, 40), torch.tensor([57])).shape[1] == expected[0]
    # Frequency arithmetic: the first RNN's input size matches what the convolutions produce.
    assert model.conv(torch.randn(1, 57, 40), torch.tensor([57])).shape[2] == model.conv.output_size
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


def test_reverse_padded_gradient():
    x = torch.randn(3, 5, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: reverse_padded(x, torch.tensor([5, 3, 1])), (x,))


def test_channels_last_convolutions_compute_what_contiguous_ones_do():
    conv = ConvFront(ModelConfig(), n_mels=80).eval()
    assert conv.layers[0].weight.is_contiguous(memory_format=torch.channels_last)
    contiguous = ConvFront(ModelConfig(), n_mels=80).eval()
    contiguous.load_state_dict(conv.state_dict())
    contiguous.layers.to(memory_format=torch.contiguous_format)
    features, lengths = torch.randn(2, 60, 80), torch.tensor([60, 41])
    assert torch.allclose(conv(features, lengths), contiguous(features, lengths), atol=1e-5)


def packed_reference(layer: RecurrentLayer, rnn_type: str) -> nn.Module:
    """The same kind of torch RNN with bidirectional=True, holding the layer's two directions' weights:
    forward_rnn's as ``*_l0``, backward_rnn's as ``*_l0_reverse``."""
    forward, backward = layer.forward_rnn, layer.backward_rnn
    reference = RNN_TYPES[rnn_type](forward.input_size, forward.hidden_size, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(forward, f"{name}_l0"))
            getattr(reference, f"{name}_l0_reverse").copy_(getattr(backward, f"{name}_l0"))
    return reference


@pytest.mark.parametrize("rnn_type", ["lstm", "gru", "rnn"])
def test_bidirectional_layer_equals_packed_sequences(rnn_type):
    torch.manual_seed(0)
    layer = RecurrentLayer(rnn_type, 6, 8, bidirectional=True)
    lengths = torch.tensor([9, 4, 7, 1])
    x = torch.randn(4, 9, 6)
    out = layer(x, lengths)
    assert out.shape == (4, 9, 16) and layer.output_size == 16
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected, _ = nn.utils.rnn.pad_packed_sequence(packed_reference(layer, rnn_type)(packed)[0], batch_first=True)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[row, :n], expected[row, :n], atol=1e-5, rtol=0)


def test_forward_only_layer():
    torch.manual_seed(0)
    layer = RecurrentLayer("lstm", 6, 8, bidirectional=False)
    x = torch.randn(2, 9, 6)
    out = layer(x, torch.tensor([9, 5]))
    assert out.shape == (2, 9, 8) and layer.output_size == 8
    torch.testing.assert_close(out, layer.forward_rnn(x)[0])


@pytest.mark.parametrize("rnn_type", ["lstm", "gru"])
def test_recurrent_layer_ignores_padding_content(rnn_type):
    torch.manual_seed(1)
    layer = RecurrentLayer(rnn_type, 6, 8, bidirectional=True)
    lengths = torch.tensor([9, 4, 6])
    x = torch.randn(3, 9, 6)
    noisy = x.clone()
    for row, n in enumerate(lengths.tolist()):
        noisy[row, n:] = torch.randn_like(noisy[row, n:]) * 100
    out, noisy_out = layer(x, lengths), layer(noisy, lengths)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(noisy_out[row, :n], out[row, :n], atol=1e-5, rtol=0)
        alone = layer(x[row:row + 1, :n], lengths[row:row + 1])
        torch.testing.assert_close(out[row, :n], alone[0], atol=1e-5, rtol=0)


def batched_and_alone(model: AcousticModel, lengths: list[int], n_mels: int = 20, noise: float = 0.0):
    """Yield (batched, alone) log-probabilities of each utterance's valid frames."""
    features = torch.randn(len(lengths), max(lengths), n_mels)
    padded = features.clone()
    for row, n in enumerate(lengths):
        padded[row, n:] = torch.randn_like(padded[row, n:]) * noise
    batched, out_lengths = model(padded, torch.tensor(lengths))
    for row, n in enumerate(lengths):
        alone, alone_lengths = model(features[row:row + 1, :n], torch.tensor([n]))
        assert int(alone_lengths[0]) == out_lengths[row] == alone.shape[1]
        yield batched[row, :alone.shape[1]], alone[0]


class FrameWise(nn.Module):
    """A stand-in for the convolutions without time context: a per-frame linear map, lengths unchanged."""

    def __init__(self, n_mels: int, output_size: int):
        super().__init__()
        self.linear = nn.Linear(n_mels, output_size)
        self.time_strides = [1]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.linear(features)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return lengths


@pytest.mark.parametrize("config", [
    dict(),
    dict(rnn_type="gru", norm="batch"),
    dict(norm="layer"),
    dict(rnn_type="rnn", bidirectional=False, lookahead=3),
], ids=["bilstm", "bigru-batchnorm", "bilstm-layernorm", "rnn-lookahead"])
def test_recurrent_stack_ignores_padding(config):
    """Between the convolutions and the output, nothing lets padding reach a valid frame:
    normalisation and lookahead between the recurrent layers respect each utterance's length."""
    torch.manual_seed(1)
    model = AcousticModel(ModelConfig(**{**SMALL, **config}), n_mels=20, vocab_size=29)
    model.conv = FrameWise(20, model.conv.output_size)
    model.train()  # sequence-wise batch norm must collect its statistics over valid frames only...
    for _ in range(3):
        model(torch.randn(3, 40, 20) * 100, torch.tensor([40, 25, 12]))  # (padding here is huge)
    model.eval()  # ...so that they stay sane
    for batched, alone in batched_and_alone(model, [40, 25, 12], noise=100.0):
        torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def trained_like(model: AcousticModel) -> AcousticModel:
    """Batch norm statistics and affine parameters as training leaves them, not the identity of a new model."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_padding_does_not_change_valid_outputs():
    """An utterance's log-probabilities must not depend on its batch's padding.

    The first convolution's output frames just past an utterance's length still overlap its
    last input frames (kernel 5, stride 2), and after batch norm even an all-padding frame
    is not zero; the second convolution reads both into the utterance's last valid frames,
    where the utterance alone sees zero padding, and the backward LSTM carries the difference
    into every frame. Zeroing each convolution's output beyond the utterance's length
    (as deepspeech.pytorch's MaskConv does) makes the outputs independent of the batch.
    """
    torch.manual_seed(1)
    model = trained_like(AcousticModel(ModelConfig(**SMALL), n_mels=20, vocab_size=29))
    for noise in (0.0, 100.0):  # zero padding (what the front end gives), then any padding at all
        for row, (batched, alone) in enumerate(batched_and_alone(model, [40, 25, 12], noise=noise)):
            torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0, msg=lambda m: (
                f"utterance {row}, padding noise {noise}: batched output differs from the utterance alone\n{m}"))


def test_dropout_only_in_training():
    torch.manual_seed(2)
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=2, rnn_hidden=16, dropout=0.5), 20, 29)
    features, lengths = torch.randn(2, 30, 20), torch.tensor([30, 20])
    model.eval()
    assert torch.equal(model(features, lengths)[0], model(features, lengths)[0])
    model.train()
    assert not torch.equal(model(features, lengths)[0], model(features, lengths)[0])


def test_dropout_drops_a_share_p_and_scales_the_rest_and_their_gradients():
    torch.manual_seed(0)
    x = torch.full((200_000,), 2.0, requires_grad=True)
    y = Dropout(0.3).train()(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.005
    assert torch.allclose(y[kept], torch.tensor(2 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.7)


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
