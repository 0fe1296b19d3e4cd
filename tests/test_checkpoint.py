"""Checkpoints: atomic save, strict load with one-line errors, half-precision weights."""

from __future__ import annotations

import dataclasses
import fractions

import numpy as np
import pytest
import torch

from asr.checkpoint import CheckpointError, export_model, load_checkpoint, model_state, save_checkpoint
from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.model import AcousticModel, ModelConfig
from asr.recognizer import build_recognizer, load_model
from asr.text import Vocabulary

CONFIG = ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=8, dropout=0.0)
FEATURES = FeatureConfig(n_mels=40)


@pytest.fixture
def model() -> AcousticModel:
    torch.manual_seed(0)
    model = AcousticModel(CONFIG, FEATURES.n_mels, len(Vocabulary()))
    with torch.no_grad():  # batch norm statistics as training would leave them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.num_batches_tracked.fill_(7)
    return model.eval()


def log_probs(recognizer_or_model, waveform: torch.Tensor) -> torch.Tensor:
    from asr.features import LogMelFrontend

    if isinstance(recognizer_or_model, AcousticModel):
        features, lengths = LogMelFrontend(FEATURES).eval()(waveform[None], torch.tensor([len(waveform)]))
        with torch.no_grad():
            return recognizer_or_model(features, lengths)[0]
    return torch.from_numpy(recognizer_or_model.log_probs(waveform[None].numpy(), np.array([len(waveform)]))[0])


def test_save_load_round_trip_is_atomic(tmp_path, model):
    path = tmp_path / "nested" / "model.pt"  # the folder is created
    state = {**model_state(model, FEATURES, Vocabulary()), "epoch": 3}
    save_checkpoint(path, state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"], "temporary file left behind"
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 3
    assert loaded["model_config"] == dataclasses.asdict(CONFIG)
    assert loaded["feature_config"] == dataclasses.asdict(FEATURES)
    assert loaded["vocabulary"] == Vocabulary().tokens
    assert loaded["model_state"].keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded["model_state"][name], tensor), name
    save_checkpoint(path, {**state, "epoch": 4})  # replaces in place
    assert load_checkpoint(path)["epoch"] == 4
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_loaded_model_computes_what_the_saved_one_did(tmp_path, model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_state(model, FEATURES, Vocabulary()))
    recognizer = load_model(path, "cpu")
    assert recognizer.vocabulary.tokens == Vocabulary().tokens
    assert recognizer.frontend.config == FEATURES
    assert recognizer.model.config == CONFIG
    assert not recognizer.model.training and not recognizer.frontend.training
    assert int(recognizer.model.conv.layers[1].num_batches_tracked) == 7
    waveform = torch.randn(8000) * 0.1
    torch.testing.assert_close(log_probs(recognizer, waveform), log_probs(model, waveform))


def test_half_precision_weights_still_load(tmp_path, model):
    state = model_state(model, FEATURES, Vocabulary())
    state["model_state"] = {name: t.half() if t.is_floating_point() else t for name, t in state["model_state"].items()}
    path = tmp_path / "half.pt"
    save_checkpoint(path, state)
    recognizer = load_model(path, "cpu")
    for name, tensor in recognizer.model.state_dict().items():
        original = model.state_dict()[name]
        assert tensor.dtype == original.dtype, name  # cast back to float32 (integer buffers keep theirs)
        torch.testing.assert_close(tensor, original.half().to(original.dtype) if original.is_floating_point() else original)
    waveform = torch.randn(8000) * 0.1
    torch.testing.assert_close(log_probs(recognizer, waveform), log_probs(model, waveform), atol=2e-2, rtol=0)


def test_export_keeps_only_inference_state_in_half_precision(tmp_path, model):
    training = tmp_path / "last.pt"
    save_checkpoint(training, {**model_state(model, FEATURES, Vocabulary()), "optimizer": {"state": {}},
                               "epoch": 5})
    exported = tmp_path / "model.pt"
    export_model(training, exported, half=True)
    state = load_checkpoint(exported)
    assert "optimizer" not in state and "epoch" not in state
    assert all(t.dtype == torch.float16 for t in state["model_state"].values() if t.is_floating_point())
    assert exported.stat().st_size < training.stat().st_size
    waveform = torch.randn(8000) * 0.1
    torch.testing.assert_close(log_probs(load_model(exported, "cpu"), waveform), log_probs(model, waveform),
                               atol=2e-2, rtol=0)


def torch_file_lacking_keys(path):
    torch.save({"model_state": {}, "vocabulary": ["_"]}, path)


def torch_file_of_a_list(path):
    torch.save([1, 2, 3], path)


def pickle_with_code(path):
    """Not loadable with weights_only=True: loading it must not run anything."""
    torch.save({"model_state": {}, "model_config": {}, "feature_config": {}, "vocabulary": [],
                "payload": fractions.Fraction(1, 3)}, path)


def truncated(path, model=None):
    torch.save({"model_state": {"w": torch.zeros(1000)}, "model_config": {}, "feature_config": {}, "vocabulary": []},
               path)
    path.write_bytes(path.read_bytes()[:500])


@pytest.mark.parametrize("make", [
    lambda path: None,
    lambda path: path.write_text("not a checkpoint\n"),
    lambda path: path.mkdir(),
    torch_file_lacking_keys,
    torch_file_of_a_list,
    pickle_with_code,
    truncated,
], ids=["missing", "text", "directory", "lacking-keys", "list", "pickled-class", "truncated"])
def test_bad_checkpoints_raise_checkpoint_error_naming_the_path(tmp_path, make):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert "weights_only" not in message and "PyTorch 2.6" not in message  # torch's advice, not the cause
    assert isinstance(error.value, AsrError)
    with pytest.raises(CheckpointError, match="model.pt"):
        load_model(path, "cpu")


def test_weights_that_do_not_fit_the_config(tmp_path, model):
    state = model_state(model, FEATURES, Vocabulary())
    state["model_config"] = {**state["model_config"], "rnn_hidden": 16}
    path = tmp_path / "mismatch.pt"
    save_checkpoint(path, state)
    with pytest.raises(CheckpointError, match=f"{path}: weights do not match"):
        load_model(path, "cpu")


def test_unknown_device_is_a_one_line_error(tmp_path, model):
    path = tmp_path / "model.pt"
    save_checkpoint(path, model_state(model, FEATURES, Vocabulary()))
    with pytest.raises(AsrError, match="unknown device 'toaster'"):
        load_model(path, "toaster")


def test_build_recognizer_from_state(model):
    recognizer = build_recognizer(model_state(model, FEATURES, Vocabulary()), torch.device("cpu"))
    assert recognizer.device == torch.device("cpu")
    assert recognizer.frame_seconds == pytest.approx(0.02)  # 10 ms hop, time stride 2


@pytest.mark.parametrize("setting, off, on", [("remove_level", False, True), ("channel_terms", 0, 3)])
def test_models_saved_with_a_retired_feature_setting_off_still_load(setting, off, on):
    """A model trained while a since-removed setting existed, with it off, computes today's features; one
    trained with it on would not, and is refused by name."""
    vocabulary = Vocabulary()
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=8), 80, len(vocabulary))
    state = model_state(model, FeatureConfig(), vocabulary)
    build_recognizer({**state, "feature_config": {**state["feature_config"], setting: off}}, torch.device("cpu"))
    with pytest.raises(AsrError, match=f"features.{setting}"):
        build_recognizer({**state, "feature_config": {**state["feature_config"], setting: on}}, torch.device("cpu"))
