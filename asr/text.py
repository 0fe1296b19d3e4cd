"""Transcript normalisation and the character vocabulary stored with every model."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from asr.errors import AsrError

BLANK = "_"
DEFAULT_TOKENS = (BLANK, " ", "'", *"abcdefghijklmnopqrstuvwxyz")

# Marks typed as apostrophes: curly quotes, backtick, acute accent, modifier letter, prime.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'", "\u02bc": "'", "\u2032": "'"})
_WORD_BREAKS = re.compile(r"[-\u2010-\u2015/_]+")
_PUNCTUATION = re.compile(r"[.,!?;:\"()\[\]{}<>«»“”„…*]+")
_SPACES = re.compile(r"\s+")


class TextError(AsrError):
    pass


def normalize_text(text: str) -> str:
    """Lower-case, strip accents and punctuation, and fold whitespace.

    Hyphens and slashes become word breaks; apostrophes inside words stay ("don't"),
    quote-like apostrophes at word edges go. Invisible format characters (soft hyphen,
    zero-width space, byte order mark) are dropped. Anything else outside the vocabulary
    (digits, other scripts) is kept, so that encoding can report it.
    """
    # Apostrophes first: NFKD would split the acute accent into a space and a combining mark.
    text = unicodedata.normalize("NFKD", text.translate(_APOSTROPHES))
    text = "".join(char for char in text if not _invisible(char)).lower()
    text = _PUNCTUATION.sub(" ", _WORD_BREAKS.sub(" ", text))
    words = (word.strip("'") for word in _SPACES.split(text))
    return " ".join(word for word in words if word)


def _invisible(char: str) -> bool:
    """Combining accents (stripped from their letters) and format characters (category Cf)."""
    return unicodedata.combining(char) != 0 or unicodedata.category(char) == "Cf"


class Vocabulary:
    """Characters the model emits; index 0 is the CTC blank."""

    def __init__(self, tokens: Sequence[str] = DEFAULT_TOKENS):
        if not tokens or tokens[0] != BLANK or len(set(tokens)) != len(tokens):
            raise TextError(f"a vocabulary starts with the blank {BLANK!r} and has no repeats")
        self.tokens = list(tokens)
        self._index = {token: index for index, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank(self) -> int:
        return 0

    def encode(self, text: str) -> list[int]:
        """Token ids of an already normalised transcript; unknown characters are an error."""
        unknown = sorted({char for char in text if char not in self._index or char == BLANK})
        if unknown:
            raise TextError(f"characters outside the vocabulary: {''.join(unknown)!r} in {text!r}")
        return [self._index[char] for char in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.tokens[index] for index in ids if index != self.blank)
