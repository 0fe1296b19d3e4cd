"""Checking an n-gram LM file before decoding with it: an ARPA model's words must be ones the acoustic
model can spell; a binary KenLM model holds no word list to check."""

from __future__ import annotations

import os
from pathlib import Path

from asr.errors import AsrError
from asr.text import Vocabulary

ARPA_HEADER = "\\data\\"
KENLM_BINARY_MAGIC = b"mmap lm http://kheafield.com/code"


class LanguageModelError(AsrError):
    pass


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


def word_list(path: Path) -> list[str]:
    """The words ``--unigrams`` names: an ARPA model's, or a text file's (whitespace-separated)."""
    if not path.is_file():
        raise LanguageModelError(f"{path}: no such word list (--unigrams)")
    with open(path, "rb") as file:
        arpa = file.read(64).lstrip().startswith(ARPA_HEADER.encode())
    try:
        words = arpa_unigrams(path) if arpa else path.read_text(encoding="utf-8").split()
    except UnicodeDecodeError:
        raise LanguageModelError(f"{path}: not a UTF-8 word list (--unigrams)") from None
    if not words:
        raise LanguageModelError(f"{path}: holds no words (--unigrams)")
    return words


def check_lm(path: str | os.PathLike, vocabulary: Vocabulary, unigrams_file: str | os.PathLike | None = None
             ) -> list[str] | None:
    """Fail early on an LM whose words the acoustic model could never spell; returns its unigrams:
    an ARPA model's own, those of ``unigrams_file`` where given, or None for a binary model without."""
    unigrams, source = arpa_unigrams(Path(path)), Path(path)
    if unigrams_file is not None:
        unigrams, source = word_list(Path(unigrams_file)), Path(unigrams_file)
    if unigrams is not None:
        words = [w for w in unigrams if w not in ("<s>", "</s>", "<unk>")]
        foreign = [w for w in words if any(c not in vocabulary.tokens[1:] for c in w)]
        if not words or len(foreign) > len(words) // 2:
            example = f" (e.g. {foreign[0]!r})" if foreign else ""
            raise LanguageModelError(f"{source}: built on a different alphabet from the model's{example}")
    return unigrams
