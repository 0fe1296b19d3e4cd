"""N-gram language models: estimating one with kaldingram, and checking one before decoding."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from kaldingram.train import NgramCounts
from tqdm import tqdm

from asr.data import quiet_unless, read_manifest, write_text_atomically
from asr.errors import AsrError
from asr.text import TextError, Vocabulary, normalize_text

ARPA_HEADER = "\\data\\"
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
MAX_ORDER = 6  # the highest order KenLM as built from PyPI loads (its KENLM_MAX_ORDER)


class LanguageModelError(AsrError):
    pass


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
    for sentence in tqdm(sentences, desc="counting n-grams", unit=" lines", **quiet_unless(progress)):
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


def arpa_unigrams(path: Path) -> list[str] | None:
    """The words of an ARPA model, or None for a binary KenLM model; anything else is an error."""
    if not path.is_file():
        raise LanguageModelError(f"{path}: no such language model file")
    with open(path, "rb") as file:
        head = file.read(len(KENLM_BINARY_MAGIC))
    if head == KENLM_BINARY_MAGIC:
        return None
    words, section = [], None
    try:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                line = line.strip()
                if section is None and line and line != ARPA_HEADER:
                    break
                if line.startswith("\\"):
                    section = line
                    if line == "\\2-grams:" or line == "\\end\\":
                        break
                elif section == "\\1-grams:" and line:
                    fields = line.split("\t")
                    if len(fields) >= 2:
                        words.append(fields[1])
    except UnicodeDecodeError:
        section = None
    if section is None:
        raise LanguageModelError(f"{path}: not an ARPA or binary KenLM language model")
    return words


def check_lm(path: str | os.PathLike, vocabulary: Vocabulary) -> list[str] | None:
    """Fail early on an LM whose words the acoustic model could never spell; returns its unigrams."""
    path = Path(path)
    unigrams = arpa_unigrams(path)
    if unigrams is not None:
        words = [w for w in unigrams if w not in ("<s>", "</s>", "<unk>")]
        foreign = [w for w in words if any(c not in vocabulary.tokens[1:] for c in w)]
        if not words or len(foreign) > len(words) // 2:
            example = f" (e.g. {foreign[0]!r})" if foreign else ""
            raise LanguageModelError(f"{path}: built on a different alphabet from the model's{example}")
    return unigrams
