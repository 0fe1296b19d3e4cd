"""A file that is not a checkpoint, given as the model, is named for what it is."""

from __future__ import annotations

import shutil

import pytest

from asr.checkpoint import CheckpointError, load_checkpoint
from helpers import FSDD, REPO, SAMPLES, assert_one_line_error, run_cli


@pytest.mark.parametrize("make, kind", [
    (lambda path: path.write_text("these are my notes\nnot weights\n"), "a text file"),
    (lambda path: path.write_text("café, naïve, 東京\n" * 2000), "a text file"),  # cut mid-character at 4096 bytes
    (lambda path: path.touch(), "an empty file"),
    (lambda path: shutil.copyfile(FSDD / "recordings" / "7_george_0.wav", path), "a WAV audio file"),
    (lambda path: shutil.copyfile(SAMPLES / "LJ001-0002.flac", path), "a FLAC audio file"),
    (lambda path: shutil.copyfile(REPO / "data" / "model.lm.arpa", path), "an ARPA language model"),
], ids=["text", "long-utf8-text", "empty", "wav", "flac", "arpa"])
def test_a_foreign_file_is_named_for_what_it_is(tmp_path, make, kind):
    path = tmp_path / "model.pt"
    make(path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value) == f"{path}: not an asr checkpoint: {kind}"


@pytest.mark.slow
def test_cli_names_a_text_file_given_as_the_model(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    result = run_cli("transcribe", SAMPLES / "LJ001-0002.flac", "--model", notes)
    assert_one_line_error(result, notes, "not an asr checkpoint: a text file")
