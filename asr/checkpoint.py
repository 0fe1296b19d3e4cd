"""Checkpoints: one file with the weights, the model and feature configs and the vocabulary.

Written atomically (a temporary file renamed into place), so a crash never leaves a
half-written checkpoint; read with ``torch.load(weights_only=True)``, so loading one
never runs code from it.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from asr.config import from_dict
from asr.errors import AsrError
from asr.features import FeatureConfig, LogMelFrontend
from asr.model import AcousticModel, ModelConfig
from asr.text import Vocabulary

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "data" / "model.pt"


MODEL_KEYS = {"model_state", "model_config", "feature_config", "vocabulary"}


class CheckpointError(AsrError):
    pass


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        torch.save(state, temporary)
        temporary.flush()
        os.fsync(temporary.fileno())
    os.replace(temporary.name, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(f"{path}: not an asr checkpoint ({str(error).splitlines()[0][:120]})") from None
    if not isinstance(state, dict) or not MODEL_KEYS <= state.keys():
        raise CheckpointError(f"{path}: not an asr checkpoint (missing model, config or vocabulary)")
    return state


def model_state(model: AcousticModel, features: FeatureConfig, vocabulary: Vocabulary) -> dict[str, Any]:
    """What every checkpoint holds; training adds its own state beside it."""
    return {
        "model_state": model.state_dict(),
        "model_config": dataclasses.asdict(model.config),
        "feature_config": dataclasses.asdict(features),
        "vocabulary": vocabulary.tokens,
    }


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = True) -> None:
    """Keep only what inference needs, optionally with half-precision weights (half the size on disk)."""
    state = load_checkpoint(checkpoint)
    weights = {name: tensor.half() if half and tensor.is_floating_point() else tensor
               for name, tensor in state["model_state"].items()}
    save_checkpoint(out, {**{key: state[key] for key in MODEL_KEYS}, "model_state": weights})


@dataclass
class Recognizer:
    """A trained model ready to run: front end, acoustic model and vocabulary on one device."""

    frontend: LogMelFrontend
    model: AcousticModel
    vocabulary: Vocabulary
    device: torch.device

    @torch.inference_mode()
    def log_probs(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded waveforms (batch, samples) -> log-probabilities (batch, frames, vocab) and frame counts."""
        features, feature_lengths = self.frontend(waveforms.to(self.device), lengths.to(self.device))
        return self.model(features, feature_lengths)


def build_recognizer(state: dict[str, Any], device: torch.device, source: str = "checkpoint") -> Recognizer:
    features = from_dict(FeatureConfig, state["feature_config"], source, "features.")
    config = from_dict(ModelConfig, state["model_config"], source, "model.")
    vocabulary = Vocabulary(state["vocabulary"])
    model = AcousticModel(config, features.n_mels, len(vocabulary))
    try:
        model.load_state_dict({name: tensor.float() for name, tensor in state["model_state"].items()})
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not match the model config ({str(error).splitlines()[0]})") from None
    frontend = LogMelFrontend(features)
    return Recognizer(frontend.to(device).eval(), model.to(device).eval(), vocabulary, device)


def load_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None) -> Recognizer:
    """Load a checkpoint (the bundled default model when ``path`` is None) for inference."""
    path = Path(path) if path is not None else DEFAULT_MODEL
    return build_recognizer(load_checkpoint(path), choose_device(device), str(path))


def choose_device(device: str | torch.device | None = None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise AsrError(f"unknown device {device!r} (try cpu, cuda or cuda:1)") from None
