"""Kaldi wav.scp entries that read audio through a command: refused, or run when asked."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from asr.audio import load_audio
from asr.corpora import CorpusError
from asr.kaldi import kaldi_recordings, prepare_kaldi
from asr.prepare import check_options
from asr.data import read_manifest
from helpers import DATA, assert_one_line_error, run_cli

KALDI = DATA / "kaldi"
WAV = (KALDI / "WAVE" / "SPEAKER0001" / "000010168.WAV").resolve()


@pytest.fixture
def piped(tmp_path):
    """A recipe folder whose data/train lists one recording as a file and one through a command."""
    data = tmp_path / "recipe" / "data" / "train"
    data.mkdir(parents=True)
    shutil.copy(WAV, tmp_path / "recipe" / "rec.wav")
    other = (KALDI / "WAVE" / "SPEAKER0005" / "000050174.WAV").resolve()
    (data / "wav.scp").write_text(f"piped cat rec.wav |\nplain {other}\n")  # run from the recipe folder
    (data / "text").write_text("piped HELLO\nplain WORLD\n")
    return data


def test_a_command_is_refused_naming_the_option_that_runs_it(piped):
    with pytest.raises(CorpusError, match=re.escape(f"{piped / 'wav.scp'}:1: reads audio through a command")) as error:
        kaldi_recordings(piped)
    assert "--run-wav-commands" in str(error.value)


def test_commands_run_when_asked_and_their_audio_is_converted(piped, tmp_path):
    out = tmp_path / "out"
    assert prepare_kaldi(piped, out, split="test", run_wav_commands=True) == {"test": 2}
    utterances = {u.text: u for u in read_manifest(out / "test.jsonl")}
    assert utterances["hello"].audio_filepath == out / "audio" / "kaldi" / "test" / "piped.flac"
    np.testing.assert_allclose(load_audio(utterances["hello"].audio_filepath), load_audio(WAV), atol=1 / 32_768 + 1e-6)
    assert utterances["world"].audio_filepath.suffix == ".WAV"  # a plain path is used where it lies


def test_segments_of_a_piped_recording(piped, tmp_path):
    (piped / "wav.scp").write_text("rec cat rec.wav |\n")
    (piped / "segments").write_text("a rec 0.0 0.5\nb rec 0.5 -1\n")
    (piped / "text").write_text("a HELLO\nb WORLD\n")
    out = tmp_path / "out"
    assert prepare_kaldi(piped, out, split="test", run_wav_commands=True) == {"test": 2}
    whole = load_audio(WAV)
    first, second = read_manifest(out / "test.jsonl")
    np.testing.assert_allclose(np.concatenate([load_audio(first.audio_filepath), load_audio(second.audio_filepath)]),
                               whole, atol=1 / 32_768 + 1e-6)


def test_a_failing_command_is_skipped_and_counted(piped, tmp_path, caplog):
    (piped / "wav.scp").write_text(f"piped sh -c 'echo no such file >&2; exit 3' |\nplain cat {WAV} |\n")
    assert prepare_kaldi(piped, tmp_path / "out", split="test", run_wav_commands=True) == {"test": 1}
    assert "skipped 1 of 2 utterances: audio unreadable" in caplog.text
    assert "no such file" in caplog.text


def test_the_option_applies_to_kaldi_only():
    with pytest.raises(CorpusError, match="the run wav commands option does not apply"):
        check_options("ljspeech", KALDI, run_wav_commands=True)


@pytest.mark.slow
def test_cli_runs_commands_only_with_the_option(piped, tmp_path):
    result = run_cli("prepare", "kaldi", piped, "--out", tmp_path / "out", "--split", "test")
    assert "--run-wav-commands" in assert_one_line_error(result, piped / "wav.scp", "through a command")
    result = run_cli("prepare", "kaldi", piped, "--out", tmp_path / "out", "--split", "test", "--run-wav-commands")
    assert result.returncode == 0, result.stderr
    assert "test: 2 utterances" in result.stdout
