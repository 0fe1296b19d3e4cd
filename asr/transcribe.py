"""Transcribing audio files: load, batch, run the model, decode, format."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asr.audio import RAW_SUFFIXES, RawFormat, load_audio
from asr.checkpoint import Recognizer
from asr.decoding import Decoder, Word, split_batch
from asr.errors import AsrError
from asr.subtitles import to_srt, to_vtt

FORMATS = ("txt", "json", "srt", "vtt")


@dataclass
class Transcript:
    path: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None  # the one-line reason when the file could not be transcribed


def _loaded(paths: Iterable[str | os.PathLike], sample_rate: int, raw: RawFormat | None
            ) -> Iterator[tuple[str, torch.Tensor | AsrError]]:
    for path in paths:
        try:
            layout = raw if Path(path).suffix.lower() in RAW_SUFFIXES else None
            yield str(path), torch.from_numpy(load_audio(path, sample_rate, layout))
        except AsrError as error:
            yield str(path), error


def transcribe_files(recognizer: Recognizer, paths: Sequence[str | os.PathLike], decoder: Decoder | None = None,
                     batch_seconds: float = 60.0, raw: RawFormat | None = None) -> Iterator[Transcript]:
    """One transcript per path, in order; a file that fails carries its one-line error instead.

    Files are run through the model in batches of about ``batch_seconds`` of audio;
    ``.raw``/``.pcm`` files are read in the layout ``raw`` gives.
    """
    decoder = decoder or recognizer.decoder()
    sample_rate = recognizer.frontend.config.sample_rate
    pending: list[tuple[str, torch.Tensor | AsrError]] = []

    def flush() -> Iterator[Transcript]:
        audio = [(path, samples) for path, samples in pending if isinstance(samples, torch.Tensor)]
        hypotheses = iter([])
        if audio:
            waveforms = torch.nn.utils.rnn.pad_sequence([samples for _, samples in audio], batch_first=True)
            lengths = torch.tensor([len(samples) for _, samples in audio])
            hypotheses = iter(decoder.decode(split_batch(*recognizer.log_probs(waveforms, lengths))))
        for path, samples in pending:
            if isinstance(samples, AsrError):
                yield Transcript(path, error=str(samples))
            else:
                hypothesis = next(hypotheses)
                yield Transcript(path, hypothesis.text, hypothesis.words, len(samples) / sample_rate)
        pending.clear()

    for path, samples in _loaded(paths, sample_rate, raw):
        pending.append((path, samples))
        longest = max((len(s) for _, s in pending if isinstance(s, torch.Tensor)), default=0)
        if longest * len(pending) >= batch_seconds * sample_rate:
            yield from flush()
    yield from flush()


def format_transcript(transcript: Transcript, format: str) -> str:
    """The transcript as its output file's text: txt, json (with word timings), srt or vtt."""
    if format == "json":
        return json.dumps({"path": transcript.path, "text": transcript.text, "duration": round(transcript.duration, 3),
                           "words": [dataclasses.asdict(word) for word in transcript.words]}) + "\n"
    if format == "srt":
        return to_srt(transcript.words)
    if format == "vtt":
        return to_vtt(transcript.words)
    return transcript.text + "\n"


def output_path(transcript: Transcript, output_dir: Path, format: str) -> Path:
    return output_dir / f"{Path(transcript.path).stem}.{format}"
