"""Training configuration: one YAML file, read strictly into small dataclasses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from asr.augment import AugmentConfig
from asr.errors import ConfigError
from asr.feature_config import FeatureConfig
from asr.model import ModelConfig
from asr.schema import from_dict


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class DataConfig:
    train: list[str] = field(default_factory=list)  # JSON Lines manifests; relative paths from the working folder
    dev: list[str] = field(default_factory=list)
    batch_seconds: float = 120.0  # audio per batch, padding included
    max_duration: float = 20.0  # longer training utterances are skipped
    num_workers: int = 1
    sortagrad: bool = True  # first epoch shortest utterances first

    def problems(self) -> Iterator[tuple[str, str]]:
        for key in ("batch_seconds", "max_duration"):
            if getattr(self, key) <= 0:
                yield key, f"must be positive, not {getattr(self, key)}"
        if self.num_workers < 0:
            yield "num_workers", f"must be zero or more, not {self.num_workers}"


@dataclass
class TrainingConfig:
    epochs: int = 30
    learning_rate: float = 1.5e-3
    weight_decay: float = 1e-2
    warmup_steps: int = 300
    final_lr_ratio: float = 0.05  # cosine decay ends at this fraction of the peak rate
    grad_clip: float = 5.0
    precision: str = "auto"  # auto (fp16 on CUDA; on a CPU, see asr.train.autocast_settings) | fp32 | bf16 | fp16
    seed: int = 0
    max_minutes: float = 0.0  # stop after this much training time (0: no limit; dev evaluation not counted); the decay fits in it
    accumulate_batches: int = 1  # batches whose gradients add up to one optimiser step
    checkpoint_every: int = 0  # also write last.pt every this many steps (0: at epoch ends only)
    tensorboard: bool = False  # also log to OUT/tensorboard (needs the tensorboard package)
    # Keep the weights of the N epochs with the lowest dev WER and, at the end, write average.pt, their
    # element-wise mean (ESPnet's n-best averaging); 0: off.
    average_best: int = 0
    # Start from this checkpoint's weights instead of random ones (fine-tuning); its model config and vocabulary
    # must be the config's, and its feature config (prior statistics included) replaces the config's.
    init: str = ""
    # Parameters that keep the values the run starts from: names or their beginnings, a layer at a time (conv,
    # rnns.0 ... rnns.N-1, output); a frozen batch norm keeps its statistics too. asr adapt freezes the output layer.
    freeze: list[str] = field(default_factory=list)

    def problems(self) -> Iterator[tuple[str, str]]:
        if self.accumulate_batches < 1:
            yield "accumulate_batches", f"must be at least 1, not {self.accumulate_batches}"
        for key in ("checkpoint_every", "average_best"):
            if getattr(self, key) < 0:
                yield key, f"must be zero or more, not {getattr(self, key)}"
        if self.max_minutes < 0:
            yield "max_minutes", f"must be zero or more, not {self.max_minutes}"
        if self.epochs < 1:
            yield "epochs", f"must be at least 1, not {self.epochs}"
        for key in ("learning_rate", "grad_clip"):
            if getattr(self, key) <= 0:
                yield key, f"must be positive, not {getattr(self, key)}"
        if self.weight_decay < 0 or self.warmup_steps < 0:
            yield "weight_decay" if self.weight_decay < 0 else "warmup_steps", "must be zero or more"
        if not 0 <= self.final_lr_ratio <= 1:
            yield "final_lr_ratio", f"must be in [0, 1], not {self.final_lr_ratio}"
        if self.precision not in PRECISIONS:
            yield "precision", f"must be one of {', '.join(PRECISIONS)}, not {self.precision!r}"


@dataclass
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def load_config(path: str | Path) -> Config:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    config = from_dict(Config, values, source=str(path))
    if not config.data.train:
        raise ConfigError(f"{path}: data.train names no manifest")
    if config.training.init and "features" in values:
        raise ConfigError(f"{path}: features come from training.init's checkpoint ({config.training.init}); "
                          "remove the features section")
    return config
