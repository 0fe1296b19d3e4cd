"""Shared fixtures: the small corpora in tests/data prepared once per session. Plain helpers live in helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import AN4, FSDD

# The tests' tensors are tiny: one thread avoids thread start-up and contention with
# whatever else is using the CPU (a training run, say), which otherwise costs seconds.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def an4_prepared(tmp_path_factory) -> Path:
    """tests/data/an4 prepared into a fresh folder (one of its two speakers held out for dev)."""
    from asr.corpora import prepare_an4

    out = tmp_path_factory.mktemp("an4_prepared")
    counts = prepare_an4(AN4, out, dev_speakers=1, seed=0)
    assert set(counts) == {"train", "dev"} and sum(counts.values()) == 12
    return out


@pytest.fixture(scope="session")
def fsdd_prepared(tmp_path_factory) -> Path:
    from asr.corpora import prepare_fsdd

    out = tmp_path_factory.mktemp("fsdd_prepared")
    counts = prepare_fsdd(FSDD, out, dev_speakers=1, seed=0)
    assert counts == {"train": 10, "dev": 10}
    return out
