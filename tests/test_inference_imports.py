"""Inference loads only inference: `asr transcribe` imports what the chosen decoder needs, and no training code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

CLIP = REPO / "data" / "samples" / "fsdd-5_nicolas_23.flac"  # the bundled model reads it as "five"
# Runs the command as the console script does, then lists every module the process imported.
PROBE = """
import json, sys
import cli
modules = sys.argv.pop(1)
try:
    cli.main()
finally:
    with open(modules, "w") as file:
        json.dump(sorted(sys.modules), file)
"""
NEVER = ("librosa", "kaldingram", "matplotlib", "tensorboard",
         "asr.augment", "asr.config", "asr.data", "asr.evaluate", "asr.lm")
TRAINING = "asr.train"  # asr.train and whatever it is split into: asr.train_data, asr.training.loop, ...
BEAM_ONLY = ("pyctcdecode", "kenlm", "asr.beam_search")


def transcribe_listing_modules(tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    listing = tmp_path / "modules.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", PROBE, str(listing), "transcribe", str(CLIP), *options],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    return result, json.loads(listing.read_text())


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
