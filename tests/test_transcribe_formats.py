"""Transcript formats (txt, json, SRT, WebVTT), --output-dir, tune-lm and export with an LM.

The acoustic model is an untrained tiny one (made in milliseconds): what it says is
noise, but noise with words and timings, which is all the formats need.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from asr.checkpoint import attach_lm, load_checkpoint, model_state, save_checkpoint
from asr.data import read_manifest
from asr.decoding import Word
from asr.feature_config import FeatureConfig
from asr.lm import build_lm, corpus_lines
from asr.model import AcousticModel, ModelConfig
from asr.recognizer import load_model
from asr.subtitles import MAX_CUE_SECONDS, MAX_LINE_CHARS, group_cues, to_srt, to_vtt
from asr.text import Vocabulary
from asr.transcribe import Transcript, transcribe_files
from asr.transcribe_job import format_transcript, output_path
from helpers import run_cli

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"


def save_tiny_model(path) -> None:
    """An untrained tiny checkpoint whose (seeded) noise comes out as several words per utterance."""
    torch.manual_seed(0)
    model = AcousticModel(ModelConfig(conv_channels=4, rnn_layers=1, rnn_hidden=16, dropout=0.0),
                          FeatureConfig().n_mels, len(Vocabulary()))
    with torch.no_grad():  # sharper outputs and a few more spaces than plain initialisation gives
        model.output.weight *= 3
        model.output.bias[Vocabulary().tokens.index(" ")] += 0.3
    save_checkpoint(path, model_state(model.eval(), FeatureConfig(), Vocabulary()))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_tiny_model(path)
    return path


@pytest.fixture(scope="module")
def dev(an4_prepared):
    """The prepared AN4 dev utterances (one speaker, six utterances of 1 to 3.3 s)."""
    return read_manifest(an4_prepared / "dev.jsonl")


@pytest.fixture(scope="module")
def an4_lm(an4_prepared, tmp_path_factory):
    path = tmp_path_factory.mktemp("lm") / "an4.arpa"
    build_lm(corpus_lines([an4_prepared / "train.jsonl"]), 2, path, progress=False)
    return path


def seconds(match: tuple[str, ...]) -> float:
    hours, minutes, secs, millis = map(int, match)
    assert minutes < 60 and secs < 60
    return hours * 3600 + minutes * 60 + secs + millis / 1000


def parse_cues(text: str, kind: str) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of every cue, checking the syntax of SRT or WebVTT strictly on the way."""
    if kind == "vtt":
        assert text.startswith("WEBVTT\n\n"), text[:20]
        text = text[len("WEBVTT\n\n"):]
    if not text:
        return []
    assert text.endswith("\n\n"), "every cue ends with a blank line"
    time = SRT_TIME if kind == "srt" else VTT_TIME
    cues = []
    for number, block in enumerate(text[:-2].split("\n\n"), start=1):
        lines = block.split("\n")
        if kind == "srt":
            assert lines.pop(0) == str(number), block
        timing = re.fullmatch(f"{time} --> {time}", lines[0])
        assert timing, f"bad timing line {lines[0]!r}"
        start, end = seconds(timing.groups()[:4]), seconds(timing.groups()[4:])
        assert 0 <= start <= end, lines[0]
        assert 1 <= len(lines[1:]) <= 2 and all(line.strip() == line and line for line in lines[1:]), block
        cues.append((start, end, lines[1:]))
    assert all(a[1] <= b[0] for a, b in zip(cues, cues[1:])), "cues overlap or are out of order"
    return cues


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(word, start, end, 0.9) for word, start, end in spec]


def evenly(text: str, step: float = 0.3, length: float = 0.25, start: float = 0.0) -> list[Word]:
    return [Word(word, round(start + i * step, 3), round(start + i * step + length, 3), 0.9)
            for i, word in enumerate(text.split())]


# ---------------------------------------------------------------- subtitles from hand-made words


def test_srt_and_vtt_of_two_cues():
    spoken = words(("hello", 0.5, 0.9), ("world", 1.0, 1.42), ("again", 3.0, 3.5))  # 1.58 s pause before "again"
    assert to_srt(spoken) == ("1\n00:00:00,500 --> 00:00:01,420\nhello world\n\n"
                              "2\n00:00:03,000 --> 00:00:03,500\nagain\n\n")
    assert to_vtt(spoken) == ("WEBVTT\n\n00:00:00.500 --> 00:00:01.420\nhello world\n\n"
                              "00:00:03.000 --> 00:00:03.500\nagain\n\n")


def test_timestamps_past_an_hour():
    late = words(("late", 3725.25, 3726.5), ("night", 36000.0, 36000.999))
    assert to_srt(late) == ("1\n01:02:05,250 --> 01:02:06,500\nlate\n\n"
                            "2\n10:00:00,000 --> 10:00:00,999\nnight\n\n")
    assert to_vtt(late) == ("WEBVTT\n\n01:02:05.250 --> 01:02:06.500\nlate\n\n"
                            "10:00:00.000 --> 10:00:00.999\nnight\n\n")


def test_no_words():
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n\n"
    assert parse_cues(to_vtt([]), "vtt") == []


def test_a_pause_over_a_second_starts_a_new_cue():
    exactly = words(("one", 0.0, 0.5), ("two", 1.5, 2.0))  # a pause of exactly one second
    assert [[w.word for w in cue] for cue in group_cues(exactly)] == [["one", "two"]]
    longer = words(("one", 0.0, 0.5), ("two", 1.51, 2.0))
    assert [[w.word for w in cue] for cue in group_cues(longer)] == [["one"], ["two"]]
    assert [lines for _, _, lines in parse_cues(to_srt(longer), "srt")] == [["one"], ["two"]]


def test_cues_last_at_most_six_seconds():
    spoken = evenly("one two three four five six seven eight nine ten " * 5, step=0.5, length=0.4)  # 25 s
    cues = parse_cues(to_srt(spoken), "srt")
    assert len(cues) >= 25 / MAX_CUE_SECONDS
    for start, end, _ in cues:
        assert end - start <= MAX_CUE_SECONDS
    # Cues are filled greedily: each but the last would have run over six seconds with the next word.
    groups = group_cues(spoken)
    for cue, following in zip(groups, groups[1:]):
        assert following[0].end - cue[0].start > MAX_CUE_SECONDS
    assert " ".join(" ".join(lines) for _, _, lines in cues) == " ".join(w.word for w in spoken)


def test_a_long_cue_is_split_into_two_balanced_lines():
    spoken = evenly("we choose to go to the moon in this decade and do the other things", step=0.2, length=0.15)
    (cue,) = parse_cues(to_srt(spoken), "srt")
    assert cue[2] == ["we choose to go to the moon in this", "decade and do the other things"]
    (vtt_cue,) = parse_cues(to_vtt(spoken), "vtt")
    assert vtt_cue == cue


TEXTS = [
    "four score and seven years ago our fathers brought forth on this continent a new nation conceived in "
    "liberty and dedicated to the proposition that all men are created equal",
    "it was the best of times it was the worst of times it was the age of wisdom it was the age of foolishness",
    "a " * 60,
    # Long words: no break near the middle of the 76 characters, so halving them leaves a line of 43.
    "the unquestionably extraordinary circumstances notwithstanding international representatives",
    "telecommunications infrastructure modernisation internationalisation considerations",
]


@pytest.mark.parametrize("text", TEXTS, ids=["gettysburg", "dickens", "short-words", "long-words", "longer-words"])
@pytest.mark.parametrize("kind", ["srt", "vtt"])
def test_lines_fit_42_characters_and_cues_two_lines(text, kind):
    spoken = evenly(text, step=0.15, length=0.1)  # fast speech: the characters, not the seconds, fill a cue
    render = to_srt if kind == "srt" else to_vtt
    cues = parse_cues(render(spoken), kind)
    for _, _, lines in cues:
        assert len(lines) <= 2
        for line in lines:
            assert len(line) <= MAX_LINE_CHARS, f"{len(line)} characters: {line!r}"
    assert " ".join(" ".join(lines) for _, _, lines in cues).split() == text.split()


# ---------------------------------------------------------------- transcripts in each format


def test_format_transcript_of_hand_made_words():
    transcript = Transcript("clips/a.wav", "go now", words(("go", 0.04, 0.14), ("now", 0.22, 0.34)), 1.23456)
    assert format_transcript(transcript, "txt") == "go now\n"
    assert json.loads(format_transcript(transcript, "json")) == {
        "path": "clips/a.wav", "text": "go now", "duration": 1.235,
        "words": [{"word": "go", "start": 0.04, "end": 0.14, "confidence": 0.9},
                  {"word": "now", "start": 0.22, "end": 0.34, "confidence": 0.9}]}
    assert format_transcript(transcript, "json").count("\n") == 1  # one line a transcript
    assert format_transcript(transcript, "srt") == "1\n00:00:00,040 --> 00:00:00,340\ngo now\n\n"
    assert format_transcript(transcript, "vtt") == "WEBVTT\n\n00:00:00.040 --> 00:00:00.340\ngo now\n\n"
    silent = Transcript("b.flac", duration=2.0)
    assert format_transcript(silent, "txt") == "\n"
    assert format_transcript(silent, "srt") == ""
    assert json.loads(format_transcript(silent, "json"))["words"] == []
    assert output_path(transcript, Path("out"), "srt") == Path("out/a.srt")
    assert output_path(Transcript("/data/talk.v2.flac"), Path("o"), "vtt") == Path("o/talk.v2.vtt")


def test_transcribe_files_keeps_order_and_reports_bad_files(tiny_model, dev, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nonsense")
    paths = [dev[0].audio_filepath, bad, dev[1].audio_filepath, tmp_path / "missing.flac"]
    results = list(transcribe_files(load_model(tiny_model, "cpu"), paths, batch_seconds=2.0))
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.error is None for r in results] == [True, False, True, False]
    assert str(bad) in results[1].error and "\n" not in results[1].error
    for result, utterance in zip(results[::2], dev[:2]):
        assert result.duration == pytest.approx(utterance.duration, abs=0.01)
        assert result.text == " ".join(w.word for w in result.words)
        for word in result.words:
            assert 0 <= word.start < word.end <= result.duration + 0.05
            assert 0 <= word.confidence <= 1


@pytest.fixture(scope="module")
def expected(tiny_model, dev):
    """What the tiny model makes of the first dev utterance, transcribed in this process."""
    (transcript,) = transcribe_files(load_model(tiny_model, "cpu"), [dev[0].audio_filepath])
    assert transcript.error is None and transcript.words, "the tiny model should say something"
    return transcript


@pytest.mark.slow
def test_cli_json(tiny_model, dev, expected):
    result = run_cli("transcribe", dev[0].audio_filepath, "--model", tiny_model, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    transcript = json.loads(result.stdout)
    assert set(transcript) == {"path", "text", "duration", "words"}
    assert transcript["path"] == str(dev[0].audio_filepath)
    assert transcript["duration"] == pytest.approx(dev[0].duration, abs=0.01)
    assert transcript["text"] == expected.text
    assert transcript["text"] == " ".join(word["word"] for word in transcript["words"])
    assert len(transcript["words"]) == len(expected.words)
    for word, want in zip(transcript["words"], expected.words):
        assert set(word) == {"word", "start", "end", "confidence"}
        assert (word["word"], word["start"], word["end"]) == (want.word, want.start, want.end)
        assert word["confidence"] == pytest.approx(want.confidence, abs=1e-3)
        assert 0 <= word["start"] < word["end"] <= transcript["duration"] + 0.05
        assert 0 <= word["confidence"] <= 1


@pytest.mark.slow
def test_cli_vtt(tiny_model, dev, expected):
    result = run_cli("transcribe", dev[0].audio_filepath, "--model", tiny_model, "--format", "vtt")
    assert result.returncode == 0, result.stderr
    assert result.stdout == to_vtt(expected.words)
    cues = parse_cues(result.stdout, "vtt")
    assert " ".join(" ".join(lines) for _, _, lines in cues) == expected.text


@pytest.mark.slow
def test_cli_output_dir_writes_one_file_per_input(tiny_model, dev, tmp_path):
    bad = tmp_path / "in" / "bad.wav"
    bad.parent.mkdir()
    bad.write_text("not audio\n")
    out = tmp_path / "subs"  # created
    inputs = [dev[0].audio_filepath, bad, dev[1].audio_filepath]
    result = run_cli("transcribe", *inputs, "--model", tiny_model, "--format", "srt", "--output-dir", out)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    error, summary = result.stderr.splitlines()  # the bad file named on one line, then the job's summary
    assert error.startswith("error: ") and str(bad) in error
    assert summary.startswith("2 transcribed, 1 failed, 0 skipped: ")
    assert result.stdout == ""
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{path.stem}.srt" for path in (dev[0].audio_filepath, dev[1].audio_filepath))
    for path, utterance in zip((dev[0].audio_filepath, dev[1].audio_filepath), dev[:2]):
        cues = parse_cues((out / f"{path.stem}.srt").read_text(encoding="utf-8"), "srt")
        assert all(end <= utterance.duration + 0.05 for _, end, _ in cues)
    assert not (out / "bad.srt").exists()


# ---------------------------------------------------------------- tune-lm and export


ROW = re.compile(r"^ *(-?\d+\.\d\d) +(-?\d+\.\d\d) +(\d+\.\d\d)% +(\d+\.\d\d)%$")


@pytest.mark.slow
def test_cli_tune_lm_stores_the_best_pair_and_the_lm(tiny_model, an4_prepared, an4_lm, tmp_path):
    model = tmp_path / "model.pt"
    shutil.copyfile(tiny_model, model)
    result = run_cli("tune-lm", an4_prepared / "dev.jsonl", "--lm", an4_lm, "--model", model,
                     "--alphas", "0,1", "--betas", "0,1", "--beam-width", "8")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["alpha", "beta", "WER", "CER"]
    rows = [ROW.match(line) for line in lines[1:5]]
    assert all(rows), lines[1:5]
    grid = [(float(row[1]), float(row[2])) for row in rows]
    assert grid == [(0, 0), (0, 1), (1, 0), (1, 1)]
    best = re.fullmatch(r"best: alpha (\S+), beta (\S+): WER (\d+\.\d\d)%, CER (\d+\.\d\d)%", lines[5])
    assert best, lines[5]
    alpha, beta = float(best[1]), float(best[2])
    assert (alpha, beta) in grid
    lowest = min((float(row[3]), float(row[4])) for row in rows)
    assert (float(best[3]), float(best[4])) == lowest
    assert lines[6:] == [f"saved with {model}"]

    stored = load_checkpoint(model)["decoder"]
    assert stored == {"lm": "model.lm.arpa", "alpha": alpha, "beta": beta}
    copy = tmp_path / "model.lm.arpa"
    assert copy.read_bytes() == an4_lm.read_bytes()
    beam = load_model(model, "cpu").decoder()
    assert beam.options.kind == "beam"
    assert (beam.options.alpha, beam.options.beta) == (alpha, beta)
    assert beam.options.lm == str(copy)
    # Explicit options still win over the stored ones.
    greedy = load_model(model, "cpu").decoder("greedy")
    assert greedy.options.kind == "greedy" and greedy.options.lm is None
    assert load_model(model, "cpu").decoder(alpha=0.25).options.alpha == 0.25


@pytest.fixture
def model_with_lm(tiny_model, an4_lm, tmp_path):
    model = tmp_path / "run" / "best.pt"
    model.parent.mkdir()
    shutil.copyfile(tiny_model, model)
    attach_lm(model, an4_lm, 0.75, 1.5)
    assert (tmp_path / "run" / "best.lm.arpa").is_file()
    return model


@pytest.mark.slow
def test_cli_export_copies_the_lm_beside_the_exported_model(model_with_lm, an4_lm, tmp_path):
    out = tmp_path / "ship" / "model.pt"
    out.parent.mkdir()
    result = run_cli("export", model_with_lm, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{out}: ") and result.stdout.endswith(" MB\n")
    assert (tmp_path / "ship" / "model.lm.arpa").read_bytes() == an4_lm.read_bytes()
    assert load_checkpoint(out)["decoder"]["alpha"] == 0.75
    assert load_checkpoint(out)["decoder"]["beta"] == 1.5


def test_exported_model_finds_its_lm(model_with_lm, an4_lm, tmp_path):
    """The exported checkpoint's decoder entry must name the copy export wrote (``model.lm.arpa``),
    not the source's (``best.lm.arpa``), which does not exist beside the exported model."""
    from asr.checkpoint import export_model

    out = tmp_path / "ship" / "model.pt"
    export_model(model_with_lm, out)
    beam = load_model(out, "cpu").decoder()
    assert beam.options.kind == "beam"
    assert beam.options.lm == str(tmp_path / "ship" / "model.lm.arpa")
    assert (beam.options.alpha, beam.options.beta) == (0.75, 1.5)
