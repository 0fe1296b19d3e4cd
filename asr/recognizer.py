"""A trained model ready to run: its front end, acoustic model and vocabulary on one device, loaded
from a checkpoint, with the decoders that turn its outputs into words."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from asr.checkpoint import DEFAULT_MODEL, CheckpointError, load_checkpoint
from asr.decoding import Decoder, model_decoder
from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.features import LogMelFrontend
from asr.model import AcousticModel, ModelConfig
from asr.schema import from_dict
from asr.segment import SegmentOptions
from asr.text import Vocabulary

if TYPE_CHECKING:
    from asr.stream import Stream


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
        """A decoder for this model (see ``model_decoder``): beam search by default when it has an LM."""
        return model_decoder(self.vocabulary, self.frame_seconds, self.decoder_settings, kind, lm, alpha, beta, **options)

    def stream(self, sample_rate: int, decoder: Decoder | None = None,
               segmenting: SegmentOptions = SegmentOptions()) -> Stream:
        """A :class:`asr.stream.Stream` on this model: ``accept`` samples as they arrive, then ``finish``.

        (Imported here, not at the top: the stream sits a floor above the model and uses it.)
        """
        from asr.stream import Stream

        return Stream(self, sample_rate, decoder, segmenting)

    @torch.inference_mode()
    def log_probs(self, waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded waveforms (batch, samples) -> log-probabilities (batch, frames, vocab) and frame counts.

        numpy in and out, as the ONNX recognizer's, so that the engine holds no tensors.
        """
        waveforms = torch.from_numpy(np.ascontiguousarray(waveforms, dtype=np.float32)).to(self.device)
        lengths = torch.from_numpy(np.asarray(lengths, dtype=np.int64)).to(self.device)
        log_probs, frames = self.model(*self.frontend(waveforms, lengths))
        return log_probs.float().cpu().numpy(), frames.cpu().numpy()


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
