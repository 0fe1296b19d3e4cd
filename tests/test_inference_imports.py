"""Inference loads only inference: `asr transcribe` imports what the chosen decoder needs, and no training code."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from helpers import REPO, run_cli_listing_modules

CLIP = REPO / "data" / "samples" / "fsdd-5_nicolas_23.flac"  # the bundled model reads it as "five"
NEVER = ("librosa", "kaldingram", "matplotlib", "tensorboard",
         "asr.augment", "asr.config", "asr.data", "asr.evaluate", "asr.lm")
TRAINING = "asr.train"  # asr.train and whatever it is split into: asr.train_data, asr.training.loop, ...
BEAM_ONLY = ("pyctcdecode", "kenlm", "asr.beam_search")


def transcribe_listing_modules(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    return run_cli_listing_modules(tmp_path, "transcribe", CLIP, *options)


def imported(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The modules that are one of ``names`` or inside one, and any training module."""
    return [module for module in modules
            if module in names or module.startswith(tuple(name + "." for name in names)) or module.startswith(TRAINING)]


@pytest.mark.slow
def test_greedy_transcription_imports_no_beam_search_lm_or_training_code(tmp_path):
    result, modules = transcribe_listing_modules(tmp_path, "--decoder", "greedy")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "five\n"
    assert imported(modules, NEVER + BEAM_ONLY) == []


@pytest.mark.slow
def test_beam_search_imports_its_libraries_when_chosen(tmp_path):
    result, modules = transcribe_listing_modules(tmp_path, "--decoder", "beam")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "five\n"
    assert {"pyctcdecode", "kenlm", "asr.beam_search"} <= set(modules)
    assert imported(modules, NEVER) == []
