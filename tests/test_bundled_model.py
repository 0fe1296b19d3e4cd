"""The bundled default model transcribes the bundled samples correctly, greedy and with its LM."""

from __future__ import annotations

import json

import pytest

from asr.checkpoint import DEFAULT_MODEL
from asr.recognizer import load_model
from asr.transcribe import transcribe_files
from helpers import REPO, run_cli

SAMPLES = REPO / "data" / "samples"


def expected() -> dict[str, str]:
    with open(SAMPLES / "samples.jsonl") as manifest:
        return {str(SAMPLES / entry["audio_filepath"]): entry["text"] for entry in map(json.loads, manifest)}


def test_default_model_is_small_and_has_its_lm():
    assert DEFAULT_MODEL.stat().st_size < 25e6
    recognizer = load_model()
    assert recognizer.decoder_settings.keys() == {"lm", "alpha", "beta"}
    assert recognizer.decoder().options.kind == "beam"


@pytest.mark.parametrize("decoder", ["greedy", "beam"])
def test_bundled_samples_are_transcribed_correctly(decoder):
    references = expected()
    assert len(references) >= 2
    recognizer = load_model(device="cpu")
    results = list(transcribe_files(recognizer, list(references), recognizer.decoder(decoder)))
    assert {r.path: r.text for r in results} == references
    for result in results:
        assert [w.word for w in result.words] == result.text.split()
        assert all(0 <= w.start < w.end <= result.duration + 0.02 and 0 <= w.confidence <= 1 for w in result.words)


@pytest.mark.slow
def test_quick_start_command():
    """The README's first command, after its install step."""
    result = run_cli("transcribe", *sorted(expected()))
    assert result.returncode == 0, result.stderr
    printed = dict(line.split("\t") for line in result.stdout.splitlines())
    assert printed == expected()
