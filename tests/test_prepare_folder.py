"""`asr prepare folder`: a user's own recordings, as audio files with a .txt beside each or one metadata table."""

from __future__ import annotations

import logging

import numpy as np
import soundfile

from asr.user_folder import prepare_folder
from asr.data import read_manifest
from helpers import DATA, assert_one_line_error, run_cli

CATHY = DATA / "cathy"


def write_clip(path, seconds: float = 0.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    time = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * 220 * time), 16000)


def test_cathy_layout_flac_with_txt_beside_it(tmp_path):
    """Transcripts as written (capitals, punctuation) are normalised; 16 kHz FLAC is used where it lies."""
    result = run_cli("prepare", "folder", CATHY, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "train: 3 utterances" in result.stdout
    utterances = read_manifest(tmp_path / "out" / "train.jsonl")
    assert sorted(u.text for u in utterances) == ["author of the danger trail philip steels etc"] * 2 + [
        "not at this particular case tom apologized whittemore"]
    assert {u.audio_filepath.resolve().parent for u in utterances} == {CATHY.resolve()}
    assert not (tmp_path / "out" / "dev.jsonl").exists()


def test_missing_empty_and_unwritable_transcripts_are_skipped_in_one_warning(tmp_path, caplog):
    texts = {"a/one": "Hello there.", "a/two": None, "b/three": "  ", "four": "Room 101", "five": "Good-bye!",
             "six": "Naïve café"}
    for name, text in texts.items():
        write_clip(tmp_path / "mine" / f"{name}.wav")
        if text is not None:
            (tmp_path / "mine" / f"{name}.txt").write_text(text + "\n")
    with caplog.at_level(logging.WARNING):
        counts = prepare_folder(tmp_path / "mine", tmp_path / "out")
    assert counts == {"train": 3}
    assert sorted(u.text for u in read_manifest(tmp_path / "out" / "train.jsonl")) == [
        "good bye", "hello there", "naive cafe"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "skipped 3 of 6" in warnings[0], warnings
    for name in ("a_two", "b_three", "four"):
        assert name in warnings[0], warnings[0]


def test_dev_share_is_drawn_by_seed(tmp_path):
    for number in range(10):
        write_clip(tmp_path / "mine" / f"clip{number}.wav")
        (tmp_path / "mine" / f"clip{number}.txt").write_text(f"word {'abcdefghij'[number]}")
    dev_sets = []
    for seed in (0, 0, 1):
        out = tmp_path / f"out{len(dev_sets)}"
        assert prepare_folder(tmp_path / "mine", out, dev_share=0.3, seed=seed) == {"train": 7, "dev": 3}
        dev_sets.append({u.text for u in read_manifest(out / "dev.jsonl")})
        assert not dev_sets[-1] & {u.text for u in read_manifest(out / "train.jsonl")}
    assert dev_sets[0] == dev_sets[1] != dev_sets[2]


def test_metadata_tables_with_and_without_a_header(tmp_path):
    """A csv with a header (quoted commas), a tsv with Common Voice's names, and LJSpeech's headerless id|text."""
    tables = {"csv": 'file,speaker,text\nclips/a.wav,me,"Yes, please."\nclips/b.flac,me,No.\n',
              "tsv": "path\tsentence\nclips/a.wav\tYes please\nclips/b.flac\tNo\n",
              "lj": "a|Yes please\nb|No\n"}
    for kind, table in tables.items():
        folder = tmp_path / kind
        clips = folder / ("wavs" if kind == "lj" else "clips")
        write_clip(clips / "a.wav")
        write_clip(clips / "b.flac")
        (folder / f"metadata.{'tsv' if kind == 'tsv' else 'csv'}").write_text(table)
        assert prepare_folder(folder, tmp_path / f"out-{kind}") == {"train": 2}, kind
        texts = [u.text for u in read_manifest(tmp_path / f"out-{kind}" / "train.jsonl")]
        assert texts == ["yes please", "no"], kind


def test_ljspeech_metadata_takes_the_normalized_column(tmp_path):
    assert prepare_folder(DATA / "ljspeech" / "LJSpeech-1.1", tmp_path) == {"train": 3}
    assert any("fourteen fifty five" in u.text for u in read_manifest(tmp_path / "train.jsonl"))


def test_bad_folders_and_options_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("prepare", "folder", tmp_path / "nowhere", "--out", tmp_path / "o"), "nowhere")
    assert_one_line_error(run_cli("prepare", "folder", tmp_path / "empty", "--out", tmp_path / "o"),
                          "no audio files")
    assert_one_line_error(run_cli("prepare", "folder", CATHY, "--out", tmp_path / "o", "--dev-share", "1.5"),
                          "dev share")
    assert_one_line_error(run_cli("prepare", "an4", CATHY, "--out", tmp_path / "o", "--dev-share", "0.1"),
                          "dev share")
    write_clip(tmp_path / "table" / "a.wav")
    (tmp_path / "table" / "metadata.csv").write_text("file,text\na.wav,Yes\nmissing.wav,No\n")
    assert_one_line_error(run_cli("prepare", "folder", tmp_path / "table", "--out", tmp_path / "o"),
                          "metadata.csv:3", "missing.wav")
