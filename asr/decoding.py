"""Turning per-frame log-probabilities into text."""

from __future__ import annotations

import torch

from asr.text import Vocabulary

DECODERS = ("greedy",)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, vocabulary: Vocabulary) -> list[str]:
    """Best token per frame, repeats merged, blanks dropped (CTC's best-path decoding)."""
    best = log_probs.argmax(dim=-1).cpu()
    texts = []
    for path, length in zip(best, lengths.tolist()):
        path = torch.unique_consecutive(path[:length])
        texts.append(" ".join(vocabulary.decode(path.tolist()).split()))
    return texts
