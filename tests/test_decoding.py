"""Greedy (best-path) CTC decoding."""

from __future__ import annotations

import pytest
import torch

from asr.decoding import Decoder, DecoderOptions, split_batch
from asr.text import Vocabulary

VOCABULARY = Vocabulary()


def greedy_decode(log_probs, lengths, vocabulary):
    """Greedy transcripts of a padded batch, through the decoder the CLI uses."""
    decoder = Decoder(vocabulary, 0.02, DecoderOptions(kind="greedy"))
    return [hypothesis.text for hypothesis in decoder.decode(split_batch(log_probs.float().numpy(), lengths.numpy()))]


def frames(path: str) -> list[int]:
    """Token ids of a frame-by-frame path written with '_' for blank and '|' for space."""
    return [VOCABULARY.tokens.index(" " if char == "|" else char) for char in path]


def log_probs_of(*paths: str, pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot-ish log-probabilities whose argmax follows each path; padding frames favour 'z'."""
    length = pad_to or max(len(p) for p in paths)
    logits = torch.zeros(len(paths), length, len(VOCABULARY))
    logits[:, :, VOCABULARY.tokens.index("z")] = 5.0  # whatever fills the padding must not show up
    for row, path in enumerate(paths):
        for t, token in enumerate(frames(path)):
            logits[row, t] = 0.0
            logits[row, t, token] = 5.0
    return logits.log_softmax(-1), torch.tensor([len(p) for p in paths])


@pytest.mark.parametrize("path, text", [
    ("hhh_eee_ll_l_oo", "hello"),  # repeats merge; a blank keeps the doubled l apart
    ("hel_lo", "hello"),
    ("hello", "helo"),  # without a blank between them, the two l's are one
    ("__a__", "a"),
    ("_____", ""),
    ("a|b", "a b"),
    ("||a||b||", "a b"),  # spaces at the edges go, runs of spaces fold into one
    ("a_|_|_b", "a b"),
    ("don''t", "don't"),
    ("aa_aa", "aa"),
])
def test_greedy_decode(path, text):
    log_probs, lengths = log_probs_of(path)
    assert greedy_decode(log_probs, lengths, VOCABULARY) == [text]


def test_greedy_decode_respects_lengths():
    log_probs, lengths = log_probs_of("yes", "n_o", "", pad_to=8)
    assert lengths.tolist() == [3, 3, 0]
    assert greedy_decode(log_probs, lengths, VOCABULARY) == ["yes", "no", ""]
    # The same frames with the padding counted in: the 'z' of the padding appears.
    assert greedy_decode(log_probs, torch.tensor([8, 8, 8]), VOCABULARY) == ["yesz", "noz", "z"]


def test_greedy_decode_accepts_bf16_and_batches():
    log_probs, lengths = log_probs_of("g_oo", "s_t_a_r_t")
    assert greedy_decode(log_probs.bfloat16(), lengths, VOCABULARY) == ["go", "start"]
