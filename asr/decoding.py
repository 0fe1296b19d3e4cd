"""Turning per-frame log-probabilities into words with times: greedy, or beam search with an n-gram LM."""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from asr.errors import AsrError
from asr.lm_check import check_lm
from asr.terminal import quiet_c_stderr
from asr.text import TextError, Vocabulary, normalize_text

if TYPE_CHECKING:  # beam search's libraries (pyctcdecode, KenLM) are imported only when it is chosen
    from asr.beam_search import BeamSearch, LanguageModel

DECODERS = ("greedy", "beam")
log = logging.getLogger(__name__)
ALPHA_RANGE = (0.0, 5.0)
BETA_RANGE = (-5.0, 10.0)


class DecoderError(AsrError):
    pass


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float  # in [0, 1]


@dataclass
class Hypothesis:
    text: str
    words: list[Word]


@dataclass
class DecoderOptions:
    kind: str = "greedy"
    beam_width: int = 100
    lm: str | None = None
    unigrams_file: str | os.PathLike | None = None  # the words of a binary KenLM model, which holds no list of them
    alpha: float = 0.5  # LM weight
    beta: float = 1.0  # word insertion bonus
    hotwords: list[str] = field(default_factory=list)
    hotword_weight: float = 10.0
    workers: int = 0  # beam search processes; 0 for one per CPU this process may use
    # Pruning: tokens below this log-probability are not expanded (unless best in their frame),
    # beams this far below the best are dropped, runs of frames this sure of blank become one frame.
    token_min_logp: float = -5.0
    beam_prune_logp: float = -10.0
    blank_skip_prob: float = 0.999

    def validate(self) -> None:
        if self.kind not in DECODERS:
            raise DecoderError(f"unknown decoder {self.kind!r} (choose {' or '.join(DECODERS)})")
        if self.beam_width < 1:
            raise DecoderError(f"--beam-width must be at least 1, not {self.beam_width}")
        check_lm_weights([self.alpha], [self.beta])
        if not 0 < self.blank_skip_prob <= 1:
            raise DecoderError(f"blank_skip_prob must be in (0, 1], not {self.blank_skip_prob:g}")
        if self.unigrams_file is not None and self.lm is None:
            raise DecoderError("--unigrams: applies only to beam search with an LM (--lm)")
        if self.kind == "greedy" and self.hotwords:
            raise DecoderError("--hotword: greedy decoding takes no hotwords (use --decoder beam)")


def check_lm_weights(alphas: Sequence[float], betas: Sequence[float], options: tuple[str, str] = ("--alpha", "--beta")
                     ) -> None:
    """Every LM weight and insertion bonus in its range; ``options`` names them in the error."""
    for values, (low, high), option in ((alphas, ALPHA_RANGE, options[0]), (betas, BETA_RANGE, options[1])):
        for value in values:
            if not low <= value <= high:
                raise DecoderError(f"{option} must be in [{low:g}, {high:g}], not {value:g}")


def normalize_hotwords(hotwords: Sequence[str], vocabulary: Vocabulary) -> list[str]:
    """Hotwords normalised as transcripts are ("Paris!" -> "paris"), since beam search only ever
    spells normalised text; one the model's characters cannot spell is an error, not a silent no-op."""
    normalized = []
    for hotword in hotwords:
        text = normalize_text(hotword)
        if not text:
            raise DecoderError(f"--hotword {hotword!r}: has no letters to spell")
        try:
            vocabulary.encode(text)
        except TextError:
            unknown = "".join(sorted({char for char in text if char not in vocabulary.tokens[1:]}))
            raise DecoderError(f"--hotword {hotword!r}: cannot be spelled in the model's characters "
                               f"({unknown!r} is not one of them)") from None
        normalized.append(text)
    return normalized


def split_batch(log_probs: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    """A padded (batch, frames, vocab) array as one array per utterance, padding cut off."""
    return [log_probs[i, :length] for i, length in enumerate(lengths.tolist())]


def word_confidence(log_probs: np.ndarray, token_ids: Sequence[int], start: int, end: int) -> float:
    """Geometric mean over the word's characters of each one's best posterior inside the word's frames.

    Decoder-agnostic: a character that beam search chose against the acoustic evidence
    (because the LM preferred it) pulls the confidence down.
    """
    span = log_probs[start:max(end, start + 1)]
    return float(math.exp(np.mean([span[:, token].max() for token in token_ids]))) if token_ids else 0.0


def words_from_spans(log_probs: np.ndarray, spans: Sequence[tuple[str, int, int]], vocabulary: Vocabulary,
                     frame_seconds: float) -> list[Word]:
    return [
        Word(text, round(start * frame_seconds, 3), round(end * frame_seconds, 3),
             round(word_confidence(log_probs, vocabulary.encode(text), start, end), 4))
        for text, start, end in spans
    ]


def greedy_spans(log_probs: np.ndarray, vocabulary: Vocabulary) -> list[tuple[str, int, int]]:
    """CTC best path: the best token per frame, repeats merged, blanks dropped; words with frame spans."""
    best = log_probs.argmax(axis=1)
    space = vocabulary.tokens.index(" ")
    spans: list[tuple[str, int, int]] = []
    word, start, end, previous = "", 0, 0, vocabulary.blank
    for frame, token in enumerate(best.tolist()):
        if token != previous and token not in (vocabulary.blank, space):
            start = frame if not word else start
            word += vocabulary.tokens[token]
        if token not in (vocabulary.blank, space):
            end = frame + 1
        if token == space and word:
            spans.append((word, start, end))
            word = ""
        previous = token
    if word:
        spans.append((word, start, end))
    return spans


def aligned_spans(log_probs: np.ndarray, text: str, vocabulary: Vocabulary) -> list[tuple[str, int, int]]:
    """Words of ``text`` with the frame spans of CTC's most likely alignment of it (Viterbi).

    Beam search picks the text; this finds where each of its letters sits, which is more
    faithful than the frames a beam happened to carry through its merges.
    """
    words = text.split()
    if not words or not len(log_probs):
        return []
    labels = vocabulary.encode(" ".join(words))
    states = np.full(2 * len(labels) + 1, vocabulary.blank)  # blank, l1, blank, l2, ..., blank
    states[1::2] = labels
    # A state may skip the blank before it when it holds a letter different from two states back.
    skip = np.zeros(len(states), dtype=bool)
    skip[3::2] = states[3::2] != states[1:-2:2]
    emissions = log_probs[:, states]
    # Row 0: stay in the state; row 1: come from the previous state; row 2: skip a blank.
    # Filled in place each frame: this loop is most of the alignment's time.
    candidates = np.full((3, len(states)), -np.inf)
    skip_penalty = np.where(skip, 0.0, -np.inf)[2:]
    columns = np.arange(len(states))
    score = np.full(len(states), -np.inf)
    score[:2] = emissions[0, :2]
    back = np.zeros((len(log_probs), len(states)), dtype=np.int8)  # 0 stay, 1 from previous, 2 skip
    for t in range(1, len(log_probs)):
        candidates[0] = score
        candidates[1, 1:] = score[:-1]
        np.add(score[:-2], skip_penalty, out=candidates[2, 2:])
        choice = candidates.argmax(axis=0)
        back[t] = choice
        score = candidates[choice, columns] + emissions[t]
    state = len(states) - 1 if len(states) == 1 or score[-1] >= score[-2] else len(states) - 2
    path = np.empty(len(log_probs), dtype=np.int64)
    for t in range(len(log_probs) - 1, -1, -1):
        path[t] = state
        state -= back[t, state]
    # Letter k of the joined text sits at state 2k+1; a word spans its letters' frames.
    spans, letter = [], 0
    for word in words:
        frames = np.flatnonzero((path >= 2 * letter + 1) & (path <= 2 * (letter + len(word)) - 1))
        spans.append((word, int(frames[0]), int(frames[-1]) + 1) if len(frames) else (word, 0, 0))
        letter += len(word) + 1  # and the space
    return spans


def compress_blanks(log_probs: np.ndarray, blank: int, probability: float) -> tuple[np.ndarray, np.ndarray]:
    """Replace each run of frames where blank has at least ``probability`` by its first frame.

    Keeping one frame of each run keeps repeated letters apart ("l _ l"), so the search
    space is unchanged but for frames that could only ever extend a beam with blank.
    Returns the kept frames and their indices in the original.
    """
    sure_blank = log_probs[:, blank] >= math.log(probability)
    keep = ~sure_blank
    keep[1:] |= ~sure_blank[:-1]
    keep[:1] = True
    kept = np.flatnonzero(keep)
    return log_probs[kept], kept


class Decoder:
    """Greedy or beam-search decoding; the beam decoder (and its LM) is built once and reused."""

    def __init__(self, vocabulary: Vocabulary, frame_seconds: float, options: DecoderOptions,
                 unigrams: list[str] | None = None):
        options.validate()
        self.vocabulary = vocabulary
        self.frame_seconds = frame_seconds
        self.options = options
        self._beam_search: BeamSearch | None = None
        self._pool = None
        self._unigrams = unigrams  # for the worker processes' own decoders
        if options.kind == "beam":
            from asr import beam_search  # and with it pyctcdecode, only when beam search is chosen

            labels = ["" if token == vocabulary.tokens[vocabulary.blank] else token for token in vocabulary.tokens]
            hotwords = normalize_hotwords(options.hotwords, vocabulary)
            self._beam_search = beam_search.BeamSearch(labels, self._language_model(), hotwords, options.hotword_weight)

    def _language_model(self) -> LanguageModel | None:
        """pyctcdecode's scorer over the KenLM model at ``options.lm``, weighted by alpha and beta."""
        if self.options.lm is None:
            return None
        import kenlm
        from pyctcdecode.language_model import load_unigram_set_from_arpa

        from asr.beam_search import LanguageModel

        logging.getLogger("pyctcdecode").setLevel(logging.ERROR)  # its notes on small LMs are not for users
        try:
            with quiet_c_stderr():  # KenLM prints a loading banner from C++
                model = kenlm.Model(self.options.lm)
        except (OSError, RuntimeError) as error:
            reason = str(error).strip().splitlines()[-1][:160] if str(error).strip() else type(error).__name__
            raise DecoderError(f"{self.options.lm}: KenLM cannot load it ({reason})") from None
        if self._unigrams is None and self.options.lm.endswith(".arpa"):  # as pyctcdecode's build_ctcdecoder does
            self._unigrams = sorted(load_unigram_set_from_arpa(self.options.lm))
        if self._unigrams is None:  # pyctcdecode's own warning is hidden with its notes: this one says what to do
            log.warning("%s: no word list (a binary KenLM model holds none), so beam search scores every word in "
                        "progress as unknown; give the words it was built on with --unigrams", self.options.lm)
        return LanguageModel(model, self._unigrams, alpha=self.options.alpha, beta=self.options.beta)

    def _workers(self):
        """The pool of beam-search processes, started on first use and kept.

        Each worker builds its own copy of this decoder, LM included, in a process started from
        the forkserver (spawned where there is none): forking this process could copy a lock that
        one of its threads (an audio reader, PyTorch's) held at that moment, and hang the worker.
        So a script that decodes in parallel needs the ``if __name__ == "__main__":`` guard, as
        with any such start method. The first pool of a process costs seconds (the forkserver
        imports PyTorch); a later one, a fraction of one; the weights travel with the work, so
        tune-lm keeps one pool for its whole grid.
        """
        if self._pool is None and self._worker_count > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            context.set_forkserver_preload(["asr.decoding", "asr.beam_search"])  # imported once, not per worker
            self._pool = context.Pool(self._worker_count, _start_worker,
                                      (self.vocabulary, self.frame_seconds, self.options, self._unigrams))
        return self._pool

    @property
    def _worker_count(self) -> int:
        return self.options.workers or usable_cpus()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None

    def set_lm_weights(self, alpha: float, beta: float) -> None:
        DecoderOptions(kind=self.options.kind, alpha=alpha, beta=beta).validate()
        self.options.alpha, self.options.beta = alpha, beta
        if self._beam_search is not None and self._beam_search.language_model is not None:
            self._beam_search.language_model.reset_params(alpha=float(alpha), beta=float(beta))
            self._beam_search.reset()

    def decode(self, log_probs: Sequence[np.ndarray], timings: bool = True) -> list[Hypothesis]:
        """One hypothesis per utterance's (frames, vocab) log-probabilities; without ``timings``,
        only their texts (beam search then skips aligning the words to frames)."""
        if self._beam_search is None:
            spans = [greedy_spans(array, self.vocabulary) for array in log_probs]
            results = [(" ".join(word for word, _, _ in utterance), utterance) for utterance in spans]
        else:
            results = self._beam_results(log_probs, timings)
        return [Hypothesis(text, words_from_spans(array, words, self.vocabulary, self.frame_seconds) if timings else [])
                for array, (text, words) in zip(log_probs, results)]

    def _beam_results(self, log_probs: Sequence[np.ndarray], timings: bool) -> list[tuple[str, list]]:
        pool = self._workers() if len(log_probs) > 1 else None
        if pool is None:
            return [self._search(array, timings) for array in log_probs]
        # Longest first in small chunks, so that no worker is left alone with a run of long
        # utterances at the end (a manifest often lists its long utterances together).
        order = sorted(range(len(log_probs)), key=lambda i: len(log_probs[i]), reverse=True)
        search = functools.partial(_search_in_worker, timings=timings, weights=(self.options.alpha, self.options.beta))
        found = pool.map(search, [log_probs[i] for i in order],
                         chunksize=max(1, len(log_probs) // (16 * self._worker_count)))
        return [result for _, result in sorted(zip(order, found), key=lambda pair: pair[0])]  # back in input order

    def _search(self, log_probs: np.ndarray, timings: bool) -> tuple[str, list[tuple[str, int, int]]]:
        """One utterance's best transcript, searched over its frames less the runs of sure blanks,
        with (if ``timings``) its words' frame spans in the CTC alignment of that text."""
        options = self.options
        frames, kept = compress_blanks(log_probs, self.vocabulary.blank, options.blank_skip_prob)
        if not len(frames):  # no frames, no words
            return "", []
        text = self._beam_search.search(frames, options.beam_width, options.beam_prune_logp, options.token_min_logp)
        if not timings:
            return text, []
        # Align on the kept frames (a collapsed run of blanks holds no letter), then map back.
        return text, [(word, int(kept[start]), int(kept[end - 1]) + 1)
                      for word, start, end in aligned_spans(frames, text, self.vocabulary)]


def model_decoder(vocabulary: Vocabulary, frame_seconds: float, stored: dict, kind: str | None = None,
                  lm: str | os.PathLike | None = None, alpha: float | None = None, beta: float | None = None,
                  **options) -> Decoder:
    """A model's decoder: what is not given comes from the LM settings ``stored`` with the model
    ({"lm": absolute path, "alpha", "beta"}, or none). Beam search is the default when an LM is given or
    stored, greedy otherwise. Both recognizers (torch and ONNX) build theirs here."""
    lm = lm if lm is not None else stored.get("lm")
    kind = kind or ("beam" if lm is not None else "greedy")
    settings = DecoderOptions(
        kind=kind, lm=str(lm) if kind == "beam" and lm is not None else None,
        alpha=alpha if alpha is not None else stored.get("alpha", DecoderOptions.alpha),
        beta=beta if beta is not None else stored.get("beta", DecoderOptions.beta), **options,
    )
    settings.validate()
    unigrams = check_lm(settings.lm, vocabulary, settings.unigrams_file) if settings.lm else None
    return Decoder(vocabulary, frame_seconds, settings, unigrams)


def usable_cpus() -> int:
    """The CPUs this process may run on: in a container, its share, not the host's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_WORKER_DECODER: Decoder | None = None  # a worker process's own copy of the decoder whose pool started it


def _start_worker(vocabulary: Vocabulary, frame_seconds: float, options: DecoderOptions,
                  unigrams: list[str] | None) -> None:
    global _WORKER_DECODER
    log.setLevel(logging.ERROR)  # what building the decoder has to say, its owner said already
    _WORKER_DECODER = Decoder(vocabulary, frame_seconds, dataclasses.replace(options, workers=1), unigrams)


def _search_in_worker(log_probs: np.ndarray, timings: bool, weights: tuple[float, float]
                      ) -> tuple[str, list[tuple[str, int, int]]]:
    """Search with the LM weights the pool's owner has now (tune-lm changes them between batches)."""
    if weights != (_WORKER_DECODER.options.alpha, _WORKER_DECODER.options.beta):
        _WORKER_DECODER.set_lm_weights(*weights)
    return _WORKER_DECODER._search(log_probs, timings)
