"""Manifests, the training dataset, and a sampler that batches by seconds of audio.

A manifest is JSON Lines, one utterance a line: ``{"audio_filepath", "duration", "text"}``
(NeMo's convention); relative audio paths resolve against the manifest's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from asr.audio import load_audio
from asr.errors import AsrError
from asr.files import write_text_atomically
from asr.text import TextError, Vocabulary, normalize_text


class ManifestError(AsrError):
    pass


@dataclass
class Utterance:
    audio_filepath: Path
    duration: float
    text: str


def read_manifest(path: str | os.PathLike) -> list[Utterance]:
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest")
    utterances = []
    with open(path, encoding="utf-8", errors="strict") as lines:
        try:
            for number, line in enumerate(lines, start=1):
                if line.strip():
                    utterances.append(_parse_line(line, f"{path}:{number}", path.parent))
        except UnicodeDecodeError:
            raise ManifestError(f"{path}: not UTF-8 text") from None
    if not utterances:
        raise ManifestError(f"{path}: manifest has no utterances")
    return utterances


def _parse_line(line: str, where: str, folder: Path) -> Utterance:
    try:
        entry = json.loads(line)
        audio, duration, text = entry["audio_filepath"], float(entry["duration"]), entry["text"]
    except json.JSONDecodeError as error:
        raise ManifestError(f"{where}: not a JSON object ({error.msg} column {error.colno})") from None
    except (KeyError, TypeError) as error:
        raise ManifestError(f"{where}: needs audio_filepath, duration and text ({error!s})") from None
    except ValueError:
        raise ManifestError(f"{where}: duration must be a number") from None
    if not isinstance(audio, str) or not isinstance(text, str) or not duration >= 0:
        raise ManifestError(f"{where}: audio_filepath and text must be strings, duration a non-negative number")
    return Utterance(folder / audio, duration, text)


def write_manifest(path: str | os.PathLike, utterances: Sequence[Utterance]) -> None:
    """Write atomically, with audio paths relative to the manifest's folder where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()
    lines = []
    for utterance in utterances:
        audio = Path(utterance.audio_filepath).resolve()
        audio_path = os.path.relpath(audio, folder) if audio.is_relative_to(folder) else str(audio)
        lines.append(json.dumps({"audio_filepath": audio_path, "duration": round(utterance.duration, 4),
                                 "text": utterance.text}))
    write_text_atomically(path, "".join(line + "\n" for line in lines))


# Changes one utterance's samples: (samples, epoch, index) -> samples, as asr.augment.Augmentation does.
AudioAugmentation = Callable[[np.ndarray, int, int], np.ndarray]


class SpeechDataset(Dataset):
    """Utterances as (waveform, token ids); every transcript is checked against the vocabulary up front."""

    def __init__(self, utterances: Sequence[Utterance], vocabulary: Vocabulary, source: str = "manifest",
                 augmentation: AudioAugmentation | None = None):
        self.utterances = list(utterances)
        self.augmentation = augmentation
        self.epoch = 0  # set before each epoch's loader is created: workers copy the dataset then
        self.targets = []
        for utterance in self.utterances:
            try:
                self.targets.append(torch.tensor(vocabulary.encode(normalize_text(utterance.text))))
            except TextError as error:
                raise TextError(f"{source}: {utterance.audio_filepath}: {error}") from None

    def __len__(self) -> int:
        return len(self.utterances)

    def subset(self, indices: Sequence[int]) -> SpeechDataset:
        """The utterances at ``indices``, without encoding their transcripts again."""
        subset = SpeechDataset([], Vocabulary(), augmentation=self.augmentation)
        subset.utterances = [self.utterances[i] for i in indices]
        subset.targets = [self.targets[i] for i in indices]
        return subset

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        samples = load_audio(self.utterances[index].audio_filepath)
        if self.augmentation is not None:
            samples = self.augmentation(samples, self.epoch, index)
        return torch.from_numpy(samples), self.targets[index]


@dataclass
class Batch:
    waveforms: torch.Tensor  # (batch, samples), zero-padded
    lengths: torch.Tensor  # samples per utterance
    targets: torch.Tensor  # (batch, tokens), zero-padded
    target_lengths: torch.Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(tensor.to(device, non_blocking=True) for tensor in vars(self).values()))

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with ``pin_memory=True`` (its custom-type protocol), so that ``to(device)``
        copies to the GPU asynchronously."""
        return Batch(*(tensor.pin_memory() for tensor in vars(self).values()))


def collate(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    waveforms, targets = zip(*items)
    return Batch(
        torch.nn.utils.rnn.pad_sequence(waveforms, batch_first=True),
        torch.tensor([len(w) for w in waveforms]),
        torch.nn.utils.rnn.pad_sequence(targets, batch_first=True),
        torch.tensor([len(t) for t in targets]),
    )


class DurationBatchSampler(Sampler[list[int]]):
    """Batches of utterances of similar duration, capped by padded seconds of audio.

    ``durations`` are the utterances' seconds, or a function giving them for an epoch, when
    augmentation changes them from epoch to epoch (``Augmentation.durations``): a batch's
    utterances then come out as long as each other, whatever speed, padding or trimming each drew.
    Utterances are sorted by duration (ties broken at random), cut into batches whose
    longest utterance times their count stays within ``batch_seconds``, and the batches
    shuffled. The order depends only on ``seed`` and the epoch set with ``set_epoch``.
    With ``sortagrad``, the first epoch's batches go shortest first (DeepSpeech2's
    curriculum, which steadies CTC's early training).

    For distributed training every rank computes the same batches and takes every
    ``world_size``-th one from its ``rank``; the last few are dropped so that all ranks
    run the same number of steps. ``set_epoch(epoch, start=k)`` skips a rank's first
    ``k`` batches, to resume inside an epoch.
    """

    def __init__(self, durations: Sequence[float] | Callable[[int], Sequence[float]], batch_seconds: float,
                 shuffle: bool = True, seed: int = 0, sortagrad: bool = False, rank: int = 0, world_size: int = 1):
        self.durations = durations
        self.batch_seconds = batch_seconds
        self.shuffle = shuffle
        self.sortagrad = sortagrad
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self._last: tuple[int, list[list[int]]] | None = None  # the last epoch's batches: drawing them takes a while

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch = epoch
        self.start = start

    def durations_in(self, epoch: int) -> Sequence[float]:
        """The utterances' durations that ``epoch``'s batches are sized by."""
        return self.durations(epoch) if callable(self.durations) else self.durations

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches for the whole of ``epoch`` (the one set by ``set_epoch`` by default), ``start``
        not applied."""
        batches = self.all_batches(epoch)
        if self.world_size > 1:
            batches = batches[:len(batches) - len(batches) % self.world_size][self.rank::self.world_size]
        return batches

    def digest(self, epoch: int | None = None) -> str:
        """A hash of all ranks' batches for ``epoch``: every rank computes them, and must compute the same."""
        return hashlib.sha1(json.dumps(self.all_batches(epoch)).encode()).hexdigest()[:16]

    def all_batches(self, epoch: int | None = None) -> list[list[int]]:
        """Every rank's batches for ``epoch``, in order, before they are dealt out to the ranks."""
        epoch = self.epoch if epoch is None else epoch
        if self._last is not None and self._last[0] == epoch:
            return self._last[1]
        durations = self.durations_in(epoch)
        generator = random.Random(self.seed * 100_003 + epoch)
        order = sorted(range(len(durations)), key=lambda i: (durations[i], generator.random() if self.shuffle else i))
        batches: list[list[int]] = []
        current: list[int] = []
        for index in order:
            # Sorted ascending, so this utterance is the batch's longest.
            if current and durations[index] * (len(current) + 1) > self.batch_seconds:
                batches.append(current)
                current = []
            current.append(index)
        if current:
            batches.append(current)
        if self.shuffle and not (self.sortagrad and epoch <= 1):
            generator.shuffle(batches)
        self._last = epoch, batches
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start:])

    def __len__(self) -> int:
        """Batches in the whole of the epoch set for this rank."""
        return len(self.batches())
