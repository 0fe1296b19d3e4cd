"""Transcribing audio files with a loaded model."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from asr.audio import load_audio
from asr.checkpoint import Recognizer
from asr.decoding import greedy_decode
from asr.errors import AsrError


@dataclass
class Transcript:
    path: str
    text: str | None  # None when the file could not be read
    error: str | None = None


def transcribe_files(recognizer: Recognizer, paths: Sequence[str | os.PathLike]) -> Iterator[Transcript]:
    """One transcript per path, in order; a file that fails carries its one-line error instead."""
    sample_rate = recognizer.frontend.config.sample_rate
    for path in paths:
        try:
            samples = torch.from_numpy(load_audio(path, sample_rate))
        except AsrError as error:
            yield Transcript(str(path), None, str(error))
            continue
        log_probs, lengths = recognizer.log_probs(samples[None], torch.tensor([len(samples)]))
        yield Transcript(str(path), greedy_decode(log_probs, lengths, recognizer.vocabulary)[0])


def is_audio_path(path: Path) -> bool:
    return path.suffix.lower() in {".wav", ".flac", ".ogg", ".mp3", ".sph", ".raw", ".pcm"}
