"""Word and character error rates of a model on a manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.checkpoint import Recognizer
from asr.data import DurationBatchSampler, SpeechDataset, collate, read_manifest, write_text_atomically
from asr.decoding import greedy_decode
from asr.text import normalize_text


@dataclass
class ErrorRates:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    utterances: int


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """WER and CER by jiwer; an empty hypothesis counts as all deletions."""
    words = jiwer.process_words(list(references), list(hypotheses))
    characters = jiwer.process_characters(list(references), list(hypotheses))
    return ErrorRates(words.wer, characters.cer, words.substitutions, words.deletions, words.insertions,
                      words.hits + words.substitutions + words.deletions, len(references))


def recognize_dataset(recognizer: Recognizer, dataset: SpeechDataset, batch_seconds: float = 200.0,
                      num_workers: int = 0, progress: bool = False) -> list[str]:
    """Greedy transcripts of every utterance, in the dataset's order."""
    sampler = DurationBatchSampler([u.duration for u in dataset.utterances], batch_seconds, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=num_workers)
    hypotheses: list[str] = [""] * len(dataset)
    with tqdm(total=len(dataset), desc="decoding", unit="utt", disable=not progress) as bar:
        for indices, batch in zip(sampler, loader):
            log_probs, lengths = recognizer.log_probs(batch.waveforms, batch.lengths)
            for index, text in zip(indices, greedy_decode(log_probs, lengths, recognizer.vocabulary)):
                hypotheses[index] = text
            bar.update(len(indices))
    return hypotheses


def evaluate_manifest(recognizer: Recognizer, manifest: str | Path, errors_file: str | Path | None = None,
                      progress: bool = False) -> ErrorRates:
    utterances = read_manifest(manifest)
    dataset = SpeechDataset(utterances, recognizer.vocabulary, source=str(manifest))
    with torch.inference_mode():
        hypotheses = recognize_dataset(recognizer, dataset, progress=progress)
    references = [normalize_text(u.text) for u in utterances]
    if errors_file is not None:
        lines = [json.dumps({"audio_filepath": str(u.audio_filepath), "reference": ref, "hypothesis": hyp,
                             "wer": jiwer.wer(ref, hyp) if ref else float(bool(hyp))})
                 for u, ref, hyp in zip(utterances, references, hypotheses)]
        write_text_atomically(Path(errors_file), "".join(line + "\n" for line in lines))
    return error_rates(references, hypotheses)


def format_rates(rates: ErrorRates, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(asdict(rates))
    return (f"WER {rates.wer:.2%}  CER {rates.cer:.2%}  ({rates.substitutions} substitutions, "
            f"{rates.deletions} deletions, {rates.insertions} insertions in {rates.words} words, "
            f"{rates.utterances} utterances)")
