"""A trained model ready to run: its front end, acoustic model and vocabulary on one device, loaded
from a checkpoint, with the decoders that turn its outputs into words."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asr.checkpoint import DEFAULT_MODEL, CheckpointError, load_checkpoint
from asr.decoding import Decoder, DecoderOptions
from asr.errors import AsrError
from asr.features import FeatureConfig, LogMelFrontend
from asr.lm_check import check_lm
from asr.model import AcousticModel, ModelConfig
from asr.schema import from_dict
from asr.text import Vocabulary


@dataclass
class Recognizer:
    """A trained model ready to run: front end, acoustic model and vocabulary on one device."""

    frontend: LogMelFrontend
    model: AcousticModel
    vocabulary: Vocabulary
    device: torch.device
    # The LM (absolute path) and weights stored with the model, if any: {"lm", "alpha", "beta"}.
    decoder_settings: dict = field(default_factory=dict)

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame: the front end's hop times the convolutions' time stride."""
        stride = math.prod(self.model.conv.time_strides)
        return self.frontend.config.hop_length * stride / self.frontend.config.sample_rate

    def decoder(self, kind: str | None = None, lm: str | os.PathLike | None = None, alpha: float | None = None,
                beta: float | None = None, **options) -> Decoder:
        """A decoder for this model; what is not given comes from the model's stored LM settings.

        Beam search is the default when an LM is given or stored with the model, greedy otherwise.
        """
        stored = self.decoder_settings
        lm = lm if lm is not None else stored.get("lm")
        kind = kind or ("beam" if lm is not None else "greedy")
        settings = DecoderOptions(
            kind=kind, lm=str(lm) if kind == "beam" and lm is not None else None,
            alpha=alpha if alpha is not None else stored.get("alpha", DecoderOptions.alpha),
            beta=beta if beta is not None else stored.get("beta", DecoderOptions.beta), **options,
        )
        settings.validate()
        unigrams = check_lm(settings.lm, self.vocabulary, settings.unigrams_file) if settings.lm else None
        return Decoder(self.vocabulary, self.frame_seconds, settings, unigrams)

    @torch.inference_mode()
    def log_probs(self, waveforms: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded waveforms (batch, samples) -> log-probabilities (batch, frames, vocab) and frame counts."""
        features, feature_lengths = self.frontend(waveforms.to(self.device), lengths.to(self.device))
        return self.model(features, feature_lengths)


# Feature settings removed after they measured no gain, each with the value that left the features as they are
# now: a model saved with that value loads; one trained with the setting on is refused as an unknown key.
RETIRED_FEATURE_SETTINGS = {"remove_level": False, "channel_terms": 0}


def checkpoint_configs(state: dict[str, Any], source: str = "checkpoint"
                       ) -> tuple[FeatureConfig, ModelConfig, Vocabulary]:
    """The feature config, model config and vocabulary a checkpoint was trained with."""
    stored = {key: value for key, value in state["feature_config"].items()
              if not (key in RETIRED_FEATURE_SETTINGS and value == RETIRED_FEATURE_SETTINGS[key])}
    return (from_dict(FeatureConfig, stored, source, "features."),
            from_dict(ModelConfig, state["model_config"], source, "model."), Vocabulary(state["vocabulary"]))


def build_recognizer(state: dict[str, Any], device: torch.device, source: str = "checkpoint") -> Recognizer:
    features, config, vocabulary = checkpoint_configs(state, source)
    model = AcousticModel(config, features.n_mels, len(vocabulary))
    try:
        model.load_state_dict({name: tensor.float() for name, tensor in state["model_state"].items()})
    except RuntimeError as error:
        raise CheckpointError(f"{source}: weights do not match the model config ({str(error).splitlines()[0]})") from None
    frontend = LogMelFrontend(features)
    settings = dict(state.get("decoder", {}))
    if "lm" in settings:
        settings["lm"] = str(Path(source).parent / settings["lm"])
    return Recognizer(frontend.to(device).eval(), model.to(device).eval(), vocabulary, device, settings)


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
