"""A recognizer that runs on ONNX Runtime, with the front end in numpy: transcription without torch.

An ONNX model written by ``asr export MODEL OUT.onnx`` (``asr.onnx_export``) holds the acoustic
model's graph (features and their lengths in, log-probabilities and frame counts out) and, in its
metadata, everything else a recognizer needs: the feature config with its prior statistics, the
model config, the vocabulary and the stored LM settings. The engine (``asr.transcribe``) runs it as
it runs the torch recognizer.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.decoding import Decoder, model_decoder
from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.numpy_features import NumpyLogMel
from asr.schema import from_dict
from asr.text import TextError, Vocabulary

# The bundled model as int8 ONNX (`asr export data/model.pt data/model.onnx --int8`), the default where torch is not
# installed; package data, as model.pt is.
DEFAULT_ONNX_MODEL = Path(__file__).resolve().parent / "bundled" / "model.onnx"
FORMAT = "asr-onnx-1"  # metadata "format": tells our files from other ONNX models
INPUTS = ("features", "feature_lengths")
OUTPUTS = ("log_probs", "lengths")


class OnnxModelError(AsrError):
    pass


@dataclass
class OnnxRecognizer:
    """The ONNX counterpart of ``asr.recognizer.Recognizer``: numpy front end, ONNX Runtime session, vocabulary."""

    frontend: NumpyLogMel
    session: object  # onnxruntime.InferenceSession
    vocabulary: Vocabulary
    time_stride: int  # output frames per feature frame, inverted: the convolutions' time strides multiplied
    decoder_settings: dict = field(default_factory=dict)  # as Recognizer's: {"lm" (absolute path), "alpha", "beta"}

    @property
    def frame_seconds(self) -> float:
        return self.frontend.config.hop_length * self.time_stride / self.frontend.config.sample_rate

    def decoder(self, kind: str | None = None, lm: str | os.PathLike | None = None, alpha: float | None = None,
                beta: float | None = None, **options) -> Decoder:
        """A decoder for this model (see ``model_decoder``): beam search by default when it has an LM."""
        return model_decoder(self.vocabulary, self.frame_seconds, self.decoder_settings, kind, lm, alpha, beta, **options)

    def log_probs(self, waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Padded waveforms (batch, samples) -> log-probabilities (batch, frames, vocab) and frame counts."""
        features, feature_lengths = self.frontend(waveforms, np.asarray(lengths, dtype=np.int64))
        log_probs, frames = self.session.run(OUTPUTS, {"features": features, "feature_lengths": feature_lengths})
        return log_probs, frames


def load_onnx_model(path: str | os.PathLike) -> OnnxRecognizer:
    """Load an ONNX model written by ``asr export``; any other file is refused with a one-line error."""
    path = Path(path)
    try:
        import onnxruntime
    except ImportError:  # an install from before onnxruntime was a dependency
        raise OnnxModelError(f"{path}: an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    if not path.is_file():
        raise OnnxModelError(f"{path}: no such model file")
    options = onnxruntime.SessionOptions()
    # Without its arena ONNX Runtime returns each batch's buffers rather than keeping them for batches of other
    # shapes: a 60-minute recording peaks at 182 MB instead of 270, for a tenth more time (2-core Xeon, int8).
    options.enable_cpu_mem_arena = False
    options.log_severity_level = 3  # errors only: its warnings about unused initialisers are not the user's concern
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own types for a file that is not ONNX or is damaged
        raise OnnxModelError(f"{path}: not a readable ONNX model ({_onnxruntime_reason(error)})") from None
    metadata = session.get_modelmeta().custom_metadata_map
    if metadata.get("format") != FORMAT:
        raise OnnxModelError(f"{path}: an ONNX model, but not one written by `asr export` (no asr metadata)")
    if [i.name for i in session.get_inputs()] != list(INPUTS) or [o.name for o in session.get_outputs()] != list(OUTPUTS):
        raise OnnxModelError(f"{path}: its graph's inputs and outputs are not an asr acoustic model's")
    try:
        stored = {key: json.loads(metadata[key]) for key in ("feature_config", "model_config", "vocabulary")}
        decoder_settings = json.loads(metadata.get("decoder", "{}"))
        features = from_dict(FeatureConfig, stored["feature_config"], str(path), "features.")
        vocabulary = Vocabulary(stored["vocabulary"])
        time_stride = math.prod(int(stride[0]) for stride in stored["model_config"]["conv_strides"])
    except (KeyError, TypeError, ValueError, IndexError, TextError) as error:
        raise OnnxModelError(f"{path}: its asr metadata is damaged ({type(error).__name__}: {error})") from None
    if "lm" in decoder_settings:
        decoder_settings["lm"] = str(path.parent / decoder_settings["lm"])
    return OnnxRecognizer(NumpyLogMel(features), session, vocabulary, time_stride, decoder_settings)


def _onnxruntime_reason(error: Exception) -> str:
    """onnxruntime's message without its status prefix and the path it repeats, first line only."""
    lines = str(error).strip().splitlines() or [type(error).__name__]
    message = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", lines[0])
    return re.sub(r"^Load model from .* failed:\s*", "", message)[:160]
