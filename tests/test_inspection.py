"""`asr inspect`: one figure of what the model hears, written as a PNG, and the transcript it read."""

from __future__ import annotations

import pytest

from asr.inspection import inspect_audio
from asr.recognizer import load_model
from helpers import REPO, assert_one_line_error, run_cli

DIGIT = REPO / "data" / "samples" / "fsdd-5_nicolas_23.flac"


def test_inspect_draws_a_png_and_returns_the_transcript(tmp_path):
    out = tmp_path / "five.png"
    assert inspect_audio(load_model(device="cpu"), DIGIT, out) == "five"
    assert out.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and out.stat().st_size > 10_000


@pytest.mark.slow
def test_cli_inspect_of_a_missing_file_is_one_line_error(tmp_path):
    result = run_cli("inspect", tmp_path / "missing.wav", "--out", tmp_path / "figure.png")
    assert_one_line_error(result, tmp_path / "missing.wav")
    assert not (tmp_path / "figure.png").exists()
