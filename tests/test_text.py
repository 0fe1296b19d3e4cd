"""Transcript normalisation and the character vocabulary."""

from __future__ import annotations

import pytest

from asr.errors import AsrError
from asr.text import BLANK, DEFAULT_TOKENS, TextError, Vocabulary, normalize_text


@pytest.mark.parametrize("raw, normalised", [
    ("Hello World", "hello world"),
    ("HELLO", "hello"),
    ("Hello, world! Is it (really) you? Yes; \"no\": maybe...", "hello world is it really you yes no maybe"),
    ("well-known co-op", "well known co op"),
    ("em\u2014dash en\u2013dash", "em dash en dash"),
    ("either/or", "either or"),
    ("don\u2019t", "don't"),
    ("it`s", "it's"),
    ("\u2018quoted\u2019 'single'", "quoted single"),
    ("rock 'n' roll", "rock n roll"),
    ("\u201cHi\u2026\u201d he said.", "hi he said"),
    ("Caf\u00e9 na\u00efve Zo\u00eb \u00c5ngstr\u00f6m", "cafe naive zoe angstrom"),
    ("Cafe\u0301", "cafe"),  # decomposed accent
    ("  tabs\tand\nnew lines  ", "tabs and new lines"),
    ("non\u00a0breaking", "non breaking"),
    ("don\u00b4t", "don't"),  # acute accent typed as an apostrophe
    ("DON\u00b4T", "don't"),
    ("don\u02bct", "don't"),  # modifier letter apostrophe
    ("don\u2032t", "don't"),  # prime
    ("\u00b4quoted\u00b4", "quoted"),
    ("co\u00adoperate", "cooperate"),  # soft hyphen
    ("zero\u200bwidth", "zerowidth"),  # zero-width space
    ("\ufeffhello", "hello"),  # byte order mark
    ("join\u200dme\u2060now", "joinmenow"),  # zero-width joiner, word joiner
    ("caf\u00e9\u00b4s", "cafe's"),
    ("", ""),
    ("?!...", ""),
])
def test_normalize_text(raw, normalised):
    assert normalize_text(raw) == normalised


def test_normalize_keeps_what_the_vocabulary_must_reject():
    """Digits and other scripts survive normalisation so encoding can name them."""
    assert normalize_text("Room 101") == "room 101"
    assert normalize_text("\u043f\u0440\u0438\u0432\u0435\u0442") == "\u043f\u0440\u0438\u0432\u0435\u0442"


def test_normalize_is_idempotent():
    text = normalize_text("It\u2019s a  Well-Known, \u201cna\u00efve\u201d fact!")
    assert normalize_text(text) == text == "it's a well known naive fact"


def test_default_vocabulary():
    vocabulary = Vocabulary()
    assert vocabulary.blank == 0
    assert vocabulary.tokens[0] == BLANK
    assert len(vocabulary) == 29 == len(DEFAULT_TOKENS)
    assert set(vocabulary.tokens[1:]) == set(" 'abcdefghijklmnopqrstuvwxyz")


def test_encode_decode_round_trip():
    vocabulary = Vocabulary()
    text = normalize_text("Don't stop, JOHN-paul!")
    ids = vocabulary.encode(text)
    assert len(ids) == len(text)
    assert 0 not in ids
    assert all(0 < i < len(vocabulary) for i in ids)
    assert vocabulary.decode(ids) == text == "don't stop john paul"
    assert vocabulary.encode("") == []


def test_decode_drops_blanks():
    vocabulary = Vocabulary()
    ids = vocabulary.encode("ab")
    assert vocabulary.decode([0, ids[0], 0, 0, ids[1], 0]) == "ab"


@pytest.mark.parametrize("text, named", [("room 101", "01"), ("na\u00efve", "\u00ef"), ("a_b", "_"),
                                         ("hello!", "!"), ("stra\u00dfe", "\u00df")])
def test_unknown_characters_raise_text_error_naming_them(text, named):
    with pytest.raises(TextError) as error:
        Vocabulary().encode(text)
    assert isinstance(error.value, AsrError)
    message = str(error.value)
    assert repr(named) in message, message
    assert text in message


@pytest.mark.parametrize("tokens", [[], ["a", BLANK], [BLANK, "a", "a"]])
def test_bad_vocabularies_are_rejected(tokens):
    with pytest.raises(TextError):
        Vocabulary(tokens)


def test_custom_vocabulary():
    vocabulary = Vocabulary([BLANK, "x", "y"])
    assert vocabulary.encode("yx") == [2, 1]
    with pytest.raises(TextError, match="'z'"):
        vocabulary.encode("xyz")
