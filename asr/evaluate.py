"""Word and character error rates of a model on a manifest."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer
import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from asr.data import AudioAugmentation, DurationBatchSampler, SpeechDataset, Utterance, collate, read_manifest
from asr.decoding import Decoder, check_lm_weights, split_batch
from asr.files import write_text_atomically
from asr.terminal import progress_bar_options
from asr.text import normalize_text
from asr.transcribe import Recognizer


@dataclass
class ErrorRates:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    utterances: int

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """WER and CER by jiwer, over all words (not averaged per utterance), of references and hypotheses
    normalised alike, as transcripts are: a hypothesis's "'cause" is the reference's "cause".

    With no reference words (or characters) at all, a rate is 1 if anything was inserted, else 0.
    """
    references = [normalize_text(text) for text in references]
    hypotheses = [normalize_text(text) for text in hypotheses]
    words = jiwer.process_words(references, hypotheses)
    characters = jiwer.process_characters(references, hypotheses)
    total = words.hits + words.substitutions + words.deletions
    total_characters = characters.hits + characters.substitutions + characters.deletions
    return ErrorRates(words.wer if total else float(words.insertions > 0),
                      characters.cer if total_characters else float(characters.insertions > 0),
                      words.substitutions, words.deletions, words.insertions, total, len(references))


def dataset_log_probs(recognizer: Recognizer, dataset: SpeechDataset, batch_seconds: float = 200.0,
                      progress: bool = False) -> list[np.ndarray]:
    """The model's (frames, vocab) log-probabilities for every utterance, in the dataset's order."""
    sampler = DurationBatchSampler([u.duration for u in dataset.utterances], batch_seconds, shuffle=False)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)
    outputs: list[np.ndarray] = [np.empty(0)] * len(dataset)
    with tqdm(total=len(dataset), desc="acoustic model", unit="utt", leave=False, **progress_bar_options(progress)) as bar:
        for indices, batch in zip(sampler, loader):
            log_probs, lengths = recognizer.log_probs(batch.waveforms.numpy(), batch.lengths.numpy())
            for index, array in zip(indices, split_batch(log_probs, lengths)):
                outputs[index] = array
            bar.update(len(indices))
    return outputs


def model_outputs(recognizer: Recognizer, manifests: Sequence[str | Path], progress: bool = False,
                  augmentation: AudioAugmentation | None = None
                  ) -> tuple[list[Utterance], list[str], list[np.ndarray]]:
    """The manifests' utterances, their normalised references, and the model's log-probabilities for each,
    of their audio as recorded or as ``augmentation`` (samples, epoch, index) -> samples changes it."""
    utterances = [utterance for manifest in manifests for utterance in read_manifest(manifest)]
    dataset = SpeechDataset(utterances, recognizer.vocabulary, source=", ".join(map(str, manifests)),
                            augmentation=augmentation)
    return utterances, [normalize_text(u.text) for u in utterances], dataset_log_probs(recognizer, dataset, progress=progress)


def evaluate_manifest(recognizer: Recognizer, manifest: str | Path, decoder: Decoder,
                      errors_file: str | Path | None = None, progress: bool = False) -> ErrorRates:
    utterances, references, log_probs = model_outputs(recognizer, [manifest], progress)
    hypotheses = [h.text for h in decoder.decode(log_probs, timings=False)]
    if errors_file is not None:
        lines = [json.dumps({"audio_filepath": str(u.audio_filepath), "reference": ref, "hypothesis": hyp,
                             "errors": error_rates([ref], [hyp]).word_errors})
                 for u, ref, hyp in zip(utterances, references, hypotheses)]
        write_text_atomically(Path(errors_file), "".join(line + "\n" for line in lines))
    return error_rates(references, hypotheses)


def hypotheses_per_lm_weights(decoder: Decoder, log_probs: Sequence[np.ndarray], alphas: Sequence[float],
                              betas: Sequence[float], progress: bool = False) -> dict[tuple[float, float], list[str]]:
    """Every utterance's transcript at every (alpha, beta) pair, from the same acoustic model outputs."""
    hypotheses = {}
    grid = [(alpha, beta) for alpha in alphas for beta in betas]
    for alpha, beta in tqdm(grid, desc="alpha, beta", leave=False, **progress_bar_options(progress)):
        decoder.set_lm_weights(alpha, beta)
        hypotheses[alpha, beta] = [h.text for h in decoder.decode(log_probs, timings=False)]
    return hypotheses


def tune_lm_weights(recognizer: Recognizer, manifests: Sequence[str | Path], decoder: Decoder, alphas: Sequence[float],
                    betas: Sequence[float], progress: bool = False) -> list[tuple[float, float, ErrorRates]]:
    """WER for every (alpha, beta) pair; the acoustic model runs once and its outputs are reused."""
    check_lm_weights(alphas, betas, ("--alphas", "--betas"))  # before the acoustic model's minutes, not after
    _, references, log_probs = model_outputs(recognizer, manifests, progress)
    grid = hypotheses_per_lm_weights(decoder, log_probs, alphas, betas, progress)
    return [(alpha, beta, error_rates(references, hypotheses)) for (alpha, beta), hypotheses in grid.items()]


def format_rates(rates: ErrorRates, as_json: bool = False) -> str:
    if as_json:
        return json.dumps(asdict(rates))
    return (f"WER {rates.wer:.2%}  CER {rates.cer:.2%}  ({rates.substitutions} substitutions, "
            f"{rates.deletions} deletions, {rates.insertions} insertions in {rates.words} words, "
            f"{rates.utterances} utterances)")
