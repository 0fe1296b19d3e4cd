"""Error rates: WER and CER over normalised references and hypotheses."""

from __future__ import annotations

import pytest

from asr.evaluate import error_rates


def test_hypotheses_are_normalised_as_references_are():
    rates = error_rates(["Don't stop, 'cause it's Paris!"], ["don't stop 'cause' it's paris"])
    assert (rates.wer, rates.cer, rates.word_errors, rates.words) == (0.0, 0.0, 0, 5)


@pytest.mark.parametrize("hypotheses, expected", [(["hello", ""], 1.0), (["", ""], 0.0)])
def test_rates_with_only_empty_references_agree(hypotheses, expected):
    rates = error_rates(["", "..."], hypotheses)  # "..." is empty once normalised
    assert (rates.wer, rates.cer) == (expected, expected)
    assert rates.words == 0 and rates.insertions == (expected > 0)


def test_rates_count_every_word():
    rates = error_rates(["the cat sat", "a dog"], ["the cot sat", "a dog ran"])
    assert (rates.substitutions, rates.deletions, rates.insertions, rates.words) == (1, 0, 1, 5)
    assert rates.wer == pytest.approx(2 / 5)
