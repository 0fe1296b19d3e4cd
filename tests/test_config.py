"""Training configs: strict YAML into dataclasses, with one-line errors naming the file and the key."""

from __future__ import annotations

import re

import pytest
import yaml

from asr.config import Config, load_config
from asr.errors import AsrError, ConfigError
from helpers import REPO, assert_one_line_error, run_cli

MINIMAL = "data:\n  train: [train.jsonl]\n"


def write(tmp_path, text: str, name: str = "config.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rejected(path, *fragments: str) -> str:
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    assert isinstance(error.value, AsrError)
    return message


def test_minimal_config_gets_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert isinstance(config, Config)
    assert config.data.train == ["train.jsonl"] and config.data.dev == []
    assert config == Config(data=config.data)  # everything else is the default


def test_values_are_read_into_the_right_fields(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + """
model: {rnn_layers: 1, rnn_hidden: 96, conv_strides: [[2, 2], [1, 2]], rnn_type: gru, bidirectional: false}
features: {freq_masks: 0, time_masks: 0}
training: {epochs: 7, learning_rate: 2, precision: bf16}
"""))
    assert (config.model.rnn_layers, config.model.rnn_hidden, config.model.rnn_type) == (1, 96, "gru")
    assert config.model.bidirectional is False
    assert (config.features.freq_masks, config.features.time_masks) == (0, 0)
    assert config.training.epochs == 7 and config.training.precision == "bf16"
    assert config.training.learning_rate == 2.0 and isinstance(config.training.learning_rate, float)


def test_the_shipped_configs_load():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        load_config(path)


def test_unknown_key_names_the_dotted_key_and_the_file(tmp_path):
    path = write(tmp_path, MINIMAL + "model:\n  foo: 3\n")
    rejected(path, "'model.foo'", "unknown key")
    rejected(write(tmp_path, MINIMAL + "optimizer: {}\n", "top.yaml"), "'optimizer'")


@pytest.mark.parametrize("text, key", [
    ("augment:\n  tempos: [0.8, 1.0, 1.25]\n", "'augment.tempos'"),
    ("augment:\n  pad_probability: 0.5\n", "'augment.pad_probability'"),
    ("augment:\n  coloured_noise: true\n", "'augment.coloured_noise'"),
    ("features:\n  prior_frames: 100\n  remove_level: true\n", "'features.remove_level'"),
])
def test_a_removed_knob_is_an_unknown_key(tmp_path, text, key):
    """Knobs measured as no gain were removed (docs/experiments.md keeps their results): a config that still
    names one is told so, rather than trained without it."""
    rejected(write(tmp_path, MINIMAL + text), key, "unknown key")


@pytest.mark.parametrize("text, key", [
    ("model:\n  rnn_layers: three\n", "'model.rnn_layers'"),
    ("model:\n  rnn_layers: 2.5\n", "'model.rnn_layers'"),
    ("training:\n  epochs: true\n", "'training.epochs'"),
    ("training:\n  learning_rate: fast\n", "'training.learning_rate'"),
    ("model:\n  conv_strides: [2, 2]\n", "'model.conv_strides'"),
    ("model:\n  bidirectional: 1\n", "'model.bidirectional'"),
    ("model: 3\n", "model must be a mapping"),
])
def test_wrong_types_are_rejected(tmp_path, text, key):
    rejected(write(tmp_path, MINIMAL + text), key)


def test_type_messages_read_well(tmp_path):
    message = rejected(write(tmp_path, "data:\n  train: train.jsonl\n"), "'data.train'")
    assert "must be a list of strings, not 'train.jsonl'" in message
    message = rejected(write(tmp_path, MINIMAL + "model:\n  conv_strides: [2, 2]\n"), "'model.conv_strides'")
    assert "must be a list of lists of integers" in message


def test_exponent_without_a_dot_is_a_number(tmp_path):
    """``learning_rate: 3e-4`` is how everyone writes it, but YAML 1.1 (PyYAML) reads it as a string."""
    path = write(tmp_path, MINIMAL + "training:\n  learning_rate: 3e-4\n  weight_decay: 1e-2\n")
    assert yaml.safe_load(path.read_text())["training"]["learning_rate"] == "3e-4"  # the trap
    config = load_config(path)
    assert config.training.learning_rate == pytest.approx(3e-4)
    assert config.training.weight_decay == pytest.approx(1e-2)


@pytest.mark.parametrize("text", ["model:\n  conv_channels: [1\n", "a: b: c\n", "\tmodel: {}\n"])
def test_bad_yaml(tmp_path, text):
    rejected(write(tmp_path, text), "not valid YAML")


def test_binary_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xff\xfe\x00\x01")
    rejected(path, "not valid YAML")


def test_bad_precision(tmp_path):
    rejected(write(tmp_path, MINIMAL + "training:\n  precision: fp8\n"), "training.precision", "fp32")


def test_missing_file_and_no_training_data(tmp_path):
    rejected(tmp_path / "missing.yaml", "no such config file")
    rejected(write(tmp_path, "training: {epochs: 1}\n"), "data.train")
    rejected(write(tmp_path, ""), "data.train")


@pytest.mark.parametrize("text, key", [
    ("model:\n  rnn_type: transformer\n", "'model.rnn_type'"),
    ("model:\n  dropout: 1.5\n", "'model.dropout'"),
    ("model:\n  rnn_layers: 0\n", "'model.rnn_layers'"),
    ("model:\n  conv_kernel: [5]\n", "'model.conv_kernel'"),
])
def test_model_values_no_model_can_use(tmp_path, text, key):
    rejected(write(tmp_path, MINIMAL + text), key)


def test_values_no_training_can_use_are_rejected_when_read(tmp_path):
    """Nonsense numbers should be a one-line config error, not a traceback (or a silent no-op) later."""
    cases = {
        "training.epochs": "training:\n  epochs: 0\n",  # trains nothing, then reports a best.pt that does not exist
        "training.learning_rate": "training:\n  learning_rate: -0.001\n",  # AdamW raises ValueError
        "features.hop_ms": "features:\n  hop_ms: 0\n",  # ZeroDivisionError
        "features.n_mels": "features:\n  n_mels: 0\n",
        "features.normalize": "features:\n  normalize: per_bin\n",
        "data.num_workers": "data:\n  train: [train.jsonl]\n  num_workers: -1\n",  # DataLoader raises ValueError
    }
    accepted = []
    for key, text in cases.items():
        path = write(tmp_path, text if text.startswith("data:") else MINIMAL + text, f"{key}.yaml")
        try:
            load_config(path)
            accepted.append(key)
        except ConfigError as error:
            assert re.search(re.escape(key), str(error)), str(error)
    assert not accepted, f"accepted nonsense values for: {', '.join(accepted)}"


@pytest.mark.slow
def test_cli_train_with_bad_config_is_one_line_error(tmp_path):
    path = write(tmp_path, MINIMAL + "model:\n  foo: 3\n", "bad.yaml")
    result = run_cli("train", "--config", path, "--out", tmp_path / "run")
    line = assert_one_line_error(result, path)
    assert "model.foo" in line
    assert not (tmp_path / "run").exists(), "a run folder was created for a config that does not load"
