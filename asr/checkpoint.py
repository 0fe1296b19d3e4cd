"""Checkpoints: one file with the weights, the model and feature configs and the vocabulary.

Written atomically (a temporary file renamed into place), so a crash never leaves a
half-written checkpoint; read with ``torch.load(weights_only=True)``, so loading one
never runs code from it.
"""

from __future__ import annotations

import codecs
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.files import move_into_place
from asr.model import AcousticModel
from asr.text import Vocabulary

# Package data (asr/bundled links to the source tree's data/), so a wheel install finds it too.
DEFAULT_MODEL = Path(__file__).resolve().parent / "bundled" / "model.pt"


MODEL_KEYS = {"model_state", "model_config", "feature_config", "vocabulary"}
# Files given as --model by mistake, told by their first bytes, so that the error can say what they are.
FOREIGN_SIGNATURES = ((b"RIFF", "a WAV audio file"), (b"fLaC", "a FLAC audio file"), (b"OggS", "an Ogg audio file"),
                      (b"ID3", "an MP3 audio file"), (b"NIST_1A", "a NIST SPHERE audio file"),
                      (b"\\data\\", "an ARPA language model"), (b"mmap lm ", "a binary KenLM language model"))


class CheckpointError(AsrError):
    pass


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        torch.save(state, temporary)
        temporary.flush()
        os.fsync(temporary.fileno())
    move_into_place(temporary.name, path)


def load_failure(error: Exception) -> str:
    """The first sentence of ``torch.load``'s error that says what is wrong with the file.

    A file that is not a PyTorch zip archive, or a pickle of more than tensors and plain data,
    fails in the weights-only unpickler, whose message opens with a paragraph on PyTorch 2.6's
    change of default; the cause follows "WeightsUnpickler error:".
    """
    message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # torch bolds parts of it
    _, unpickler_failed, cause = message.rpartition("WeightsUnpickler error:")
    lines = cause.strip().splitlines()
    sentence = lines[0].split(". ")[0].rstrip(".")[:120] if lines else type(error).__name__
    return f"not a PyTorch file of weights: {sentence}" if unpickler_failed else sentence


def foreign_file_kind(path: Path) -> str | None:
    """What a file that torch could not load is, where its first bytes tell (audio, a language model,
    text); None for anything else, a damaged checkpoint included."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if not head:
        return "an empty file"
    for signature, kind in FOREIGN_SIGNATURES:
        if head.lstrip().startswith(signature):
            return kind
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head)  # a character cut at the end is no error
    except UnicodeDecodeError:
        return None
    return "a text file" if all(char.isprintable() or char.isspace() for char in text) else None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a damaged or foreign file
        kind = foreign_file_kind(path)
        raise CheckpointError(f"{path}: not an asr checkpoint: {kind}" if kind else
                              f"{path}: not an asr checkpoint ({load_failure(error)})") from None
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


def average_weights(paths: Sequence[str | os.PathLike]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several checkpoints' weights, batch norm statistics included; integer
    buffers (batch norm's update count) come from the last checkpoint."""
    states = [load_checkpoint(path)["model_state"] for path in paths]
    if not states:
        raise CheckpointError("no checkpoints to average")
    return {name: (torch.stack([state[name].double() for state in states]).mean(dim=0).to(tensor.dtype)
                   if tensor.is_floating_point() else tensor)
            for name, tensor in states[-1].items()}


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, half: bool = True) -> None:
    """Keep only what inference needs, optionally with half-precision weights (half the size on disk)."""
    state = load_checkpoint(checkpoint)
    weights = {name: tensor.half() if half and tensor.is_floating_point() else tensor
               for name, tensor in state["model_state"].items()}
    exported = {**{key: state[key] for key in MODEL_KEYS}, "model_state": weights}
    if "decoder" in state:
        lm_name = copy_lm_beside(Path(checkpoint).parent / state["decoder"]["lm"], Path(out))
        exported["decoder"] = {**state["decoder"], "lm": lm_name}
    save_checkpoint(out, exported)


def copy_lm_beside(lm: Path, model: Path) -> str:
    """Copy an LM next to a model file as ``<model>.lm<suffix>``; returns its name relative to the model's folder."""
    target = model.with_name(model.stem + ".lm" + lm.suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    if lm.resolve() != target.resolve():
        shutil.copyfile(lm, target)
    return target.name


def attach_lm(model: str | os.PathLike, lm: str | os.PathLike, alpha: float, beta: float) -> None:
    """Store an LM and its tuned weights with a model, so that beam search with them becomes its default."""
    model, lm = Path(model), Path(lm)
    state = load_checkpoint(model)
    state["decoder"] = {"lm": copy_lm_beside(lm, model), "alpha": alpha, "beta": beta}
    save_checkpoint(model, state)
