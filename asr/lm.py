"""N-gram language models: estimating one with kaldingram from transcripts and word lists."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from kaldingram.train import NgramCounts
from tqdm import tqdm

from asr.data import read_manifest
from asr.files import write_text_atomically
from asr.lm_check import LanguageModelError
from asr.terminal import progress_bar_options
from asr.text import TextError, Vocabulary, normalize_text

MAX_ORDER = 6  # the highest order KenLM as built from PyPI loads (its KENLM_MAX_ORDER)


def corpus_lines(paths: Iterable[str | os.PathLike], times: int = 1) -> Iterator[str]:
    """Sentences of plain-text files (one per line) and of manifests' transcripts (``.jsonl``/``.json``),
    all of them ``times`` over.

    Every file is checked before the first line is read, so a missing one fails at once.
    Counting in-domain transcripts several times weighs them above other text (spelled word
    lists) in the n-gram counts, as interpolating an LM of each would.
    """
    paths = [Path(path) for path in paths]
    for path in paths:
        if not path.is_file():
            raise LanguageModelError(f"{path}: no such text file")
    return _lines(paths * times)


def spelled_lines(paths: Iterable[str | os.PathLike]) -> Iterator[str]:
    """Each word of plain-text word lists as a sentence of its letters ("smith" -> "s m i t h").

    Speakers who spell names letter by letter (AN4's census answers) say each letter as a
    word; a word LM trained on spelled names and words learns which letter sequences make
    them up. Words with anything but letters (apostrophes) are left out: nobody spells those.
    """
    lines = corpus_lines(paths)
    return (" ".join(word) for line in lines for word in normalize_text(line).split() if word.isalpha())


def _lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        if path.suffix in (".jsonl", ".json"):
            yield from (utterance.text for utterance in read_manifest(path))
            continue
        try:
            with open(path, encoding="utf-8") as lines:
                yield from lines
        except UnicodeDecodeError:
            raise LanguageModelError(f"{path}: not UTF-8 text") from None


def build_lm(sentences: Iterable[str], order: int, out: str | os.PathLike, vocabulary: Vocabulary | None = None,
             progress: bool = True, source: str = "the text corpus") -> int:
    """Estimate a modified Kneser-Ney ARPA model of ``order`` from sentences normalised like transcripts.

    Sentences with characters the acoustic model cannot emit are skipped, since no
    hypothesis could ever contain their words. Returns the number of sentences used.
    """
    if not 2 <= order <= MAX_ORDER:  # KenLM loads no unigram-only model
        raise LanguageModelError(f"n-gram order must be 2 to {MAX_ORDER}, not {order}")
    vocabulary = vocabulary or Vocabulary()
    counts = NgramCounts(order)
    used = 0
    for sentence in tqdm(sentences, desc="counting n-grams", unit=" lines", **progress_bar_options(progress)):
        text = normalize_text(sentence)
        try:
            vocabulary.encode(text)
        except TextError:
            continue
        if text:
            counts.add_raw_counts_from_line(text)
            used += 1
    if not used:
        raise LanguageModelError(f"{source}: no sentences the model's alphabet can spell")
    arpa = io.StringIO()
    # kaldingram draws its own progress bars for each pass; they add nothing at this size.
    with contextlib.redirect_stderr(io.StringIO()):
        counts.cal_discounting_constants()
        counts.cal_f()
        counts.cal_bow()
        counts.print_as_arpa(fout=arpa)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, arpa.getvalue())
    return used
