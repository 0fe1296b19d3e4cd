"""The training set and its batches: which utterances can train, how each epoch's are batched, the feature
statistics measured on them (features.prior_frames), and the features kept from training.init's checkpoint."""

from __future__ import annotations

import copy
import dataclasses
import logging
from functools import partial
from typing import Any

import torch
from torch.utils.data import DataLoader

from asr.augment import Augmentation, trimmed_durations
from asr.config import Config
from asr.data import DurationBatchSampler, SpeechDataset, collate, read_manifest
from asr.errors import AsrError
from asr.feature_config import FeatureConfig
from asr.features import LogMelFrontend, prior_statistics
from asr.model import AcousticModel
from asr.recognizer import checkpoint_configs
from asr.text import Vocabulary

log = logging.getLogger("asr.train")


def ctc_fits(target: torch.Tensor, frames: int) -> bool:
    """CTC needs a frame per label plus one between each pair of repeated labels."""
    repeats = int((target[1:] == target[:-1]).sum()) if len(target) > 1 else 0
    return len(target) + repeats <= frames


def output_frames(duration: float, features: FeatureConfig, model: AcousticModel) -> int:
    samples = round(duration * features.sample_rate)
    return int(model.output_lengths(torch.tensor(features.num_frames(samples))))


def training_set(config: Config, vocabulary: Vocabulary, model: AcousticModel) -> tuple[SpeechDataset, int]:
    """All training manifests, less utterances too long or with too many labels for their frames at any speed."""
    utterances = [u for manifest in config.data.train for u in read_manifest(manifest)]
    augmentation = Augmentation(config.augment, config.training.seed)
    dataset = SpeechDataset(utterances, vocabulary, source=", ".join(config.data.train),
                            augmentation=augmentation if augmentation.active else None)
    fastest = config.augment.fastest  # the fastest rate (speed times tempo) leaves the fewest frames for the labels
    keep = [i for i, (u, t) in enumerate(zip(dataset.utterances, dataset.targets))
            if config.augment.longest(u.duration) <= config.data.max_duration
            and ctc_fits(t, output_frames(u.duration / fastest, config.features, model))]
    if not keep:
        raise AsrError("no training utterance is short enough and has few enough labels for its frames")
    return dataset.subset(keep), len(utterances) - len(keep)


def training_batches(config: Config, train_set: SpeechDataset, rank: int = 0, world_size: int = 1,
                     progress: bool = False) -> DurationBatchSampler:
    """The training set's duration-bucketed batches for this rank.

    Each epoch's are sized by the durations its augmentation draws (speeds and trimming), so that a batch's
    utterances come out about as long as each other: sized by the slowest speed and no trimming instead, 13% of the
    bundled config's batches was padding, which the model computes over too, against 0.8% (docs/experiments.md).
    With trimming, the training audio is read once first, to measure each
    utterance's trimmed duration.
    """
    durations = [u.duration for u in train_set.utterances]
    augmentation = train_set.augmentation
    if augmentation is None:
        epoch_durations = durations
    else:
        trimmed = (trimmed_durations([u.audio_filepath for u in train_set.utterances], config.augment.trim_top_db,
                                     progress) if config.augment.trim_probability > 0 else None)
        epoch_durations = partial(augmentation.durations, durations, trimmed=trimmed)
    return DurationBatchSampler(epoch_durations,
                                config.data.batch_seconds, seed=config.training.seed, sortagrad=config.data.sortagrad,
                                rank=rank, world_size=world_size)


def training_prior(config: Config, train_set: SpeechDataset, device: torch.device) -> tuple[list[float], list[float]]:
    """Each mel bin's mean and deviation on the training audio, unaugmented (features.prior_mean, prior_std)."""
    unaugmented = copy.copy(train_set)
    unaugmented.augmentation = None
    sampler = DurationBatchSampler([u.duration for u in unaugmented.utterances], config.data.batch_seconds,
                                   seed=config.training.seed)
    loader = DataLoader(unaugmented, batch_sampler=sampler, collate_fn=collate, num_workers=config.data.num_workers)
    mean, std = prior_statistics(LogMelFrontend(config.features).to(device),
                                 ((batch.waveforms.to(device), batch.lengths.to(device)) for batch in loader))
    log.info("features.prior_frames %g: each mel bin's mean and deviation measured on the training audio",
             config.features.prior_frames)
    return mean, std


def with_checkpoint_features(config: Config, checkpoint: dict[str, Any], vocabulary: Vocabulary) -> Config:
    """``config`` with the feature config of training.init's checkpoint, once its model config and vocabulary
    are found to be the config's (an error naming what differs otherwise).

    The features, prior statistics included, come from the checkpoint rather than the config: its weights were
    learnt on exactly those features, and statistics measured afresh on the new data would move every input its
    first layer sees (a user's few clips would make a poor estimate besides). Its front-end augmentation
    (SpecAugment, the random channel) comes with them, as the recipe it was trained with.
    """
    source = f"training.init {config.training.init}"
    features, model, tokens = checkpoint_configs(checkpoint, source)
    differences = [f"model.{key} is {value} there, {getattr(config.model, key)} in the config"
                   for key, value in dataclasses.asdict(model).items() if getattr(config.model, key) != value]
    if tokens.tokens != vocabulary.tokens:
        differences.append(f"its vocabulary has {len(tokens)} tokens ({''.join(tokens.tokens)!r}), "
                           f"training's {len(vocabulary)} ({''.join(vocabulary.tokens)!r})")
    if differences:
        raise AsrError(f"{source}: another architecture: {'; '.join(differences)}")
    return dataclasses.replace(config, features=features)
