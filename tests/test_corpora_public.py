"""Preparing LibriSpeech, LJSpeech, Common Voice and Kaldi data directories from real samples."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from asr.audio import load_audio
from asr.config import load_config
from asr.corpora import CorpusError, prepare_commonvoice, prepare_librispeech, prepare_ljspeech
from asr.kaldi import kaldi_recordings, prepare_kaldi
from asr.prepare import prepare_corpus
from asr.data import read_manifest
from helpers import DATA, REPO, assert_one_line_error, rms, run_cli

LIBRISPEECH = DATA / "librispeech"
LJSPEECH = DATA / "ljspeech"
KALDI = DATA / "kaldi"
KALDI_TEXTS = {"000010168": "bye", "000010173": "trees", "000050174": "all with him", "000050175": "good job"}


def assert_flac_16k(utterance) -> None:
    info = soundfile.info(utterance.audio_filepath)
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 16_000, 1)
    assert utterance.duration == pytest.approx(info.frames / 16_000, abs=1e-4)
    assert 1e-4 < rms(load_audio(utterance.audio_filepath)) < 0.5


# LibriSpeech


def test_librispeech_sample_references_its_flac_files(tmp_path):
    counts = prepare_librispeech(LIBRISPEECH, tmp_path)
    assert counts == {"test": 2}
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["test-clean.jsonl", "test.jsonl"]
    test = read_manifest(tmp_path / "test.jsonl")
    assert {u.audio_filepath.name: u.text for u in test} == {
        "1089-134686-0001.flac": "stuff it into you his belly counselled him",
        "1089-134691-0000.flac": "he could wait no longer"}
    for utterance in test:  # already 16 kHz mono FLAC: used where it lies, not copied
        assert utterance.audio_filepath.is_relative_to(LIBRISPEECH / "LibriSpeech" / "test-clean")
        assert utterance.duration == pytest.approx(soundfile.info(utterance.audio_filepath).duration, abs=1e-4)
    assert not (tmp_path / "audio").exists()
    assert read_manifest(tmp_path / "test-clean.jsonl") == test


@pytest.fixture
def librispeech_subsets(tmp_path):
    """The sample's two chapters filed as train-clean-100, dev-other and test-clean."""
    root = tmp_path / "LibriSpeech"
    source = LIBRISPEECH / "LibriSpeech" / "test-clean" / "1089"
    shutil.copytree(source / "134686", root / "train-clean-100" / "1089" / "134686")
    shutil.copytree(source / "134691", root / "dev-other" / "1089" / "134691")
    shutil.copytree(source / "134691", root / "test-clean" / "1089" / "134691")
    return root


def test_librispeech_subsets_map_to_splits(librispeech_subsets, tmp_path):
    out = tmp_path / "out"
    assert prepare_librispeech(librispeech_subsets.parent, out) == {"train": 1, "dev": 1, "test": 1}
    assert sorted(p.name for p in out.glob("*.jsonl")) == [
        "dev-other.jsonl", "dev.jsonl", "test-clean.jsonl", "test.jsonl", "train-clean-100.jsonl", "train.jsonl"]
    assert read_manifest(out / "train.jsonl")[0].text == "stuff it into you his belly counselled him"
    assert "dev-other" in str(read_manifest(out / "dev.jsonl")[0].audio_filepath)
    assert prepare_librispeech(librispeech_subsets, tmp_path / "dev", subsets=["dev-other"]) == {"dev": 1}


def test_librispeech_bad_layouts(librispeech_subsets, tmp_path):
    with pytest.raises(CorpusError, match="not a LibriSpeech subset"):
        prepare_librispeech(librispeech_subsets, tmp_path / "out", subsets=["train-clean-101"])
    with pytest.raises(CorpusError, match=re.escape(str(librispeech_subsets / "test-other")) + ": no such folder"):
        prepare_librispeech(librispeech_subsets, tmp_path / "out", subsets=["test-other"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="no LibriSpeech subset folders"):
        prepare_librispeech(tmp_path / "empty", tmp_path / "out")
    transcript = next((librispeech_subsets / "dev-other").rglob("*.trans.txt"))
    transcript.write_text(transcript.read_text() + "1089-134691-0099 A LINE WITHOUT AUDIO\n")
    with pytest.raises(CorpusError, match=re.escape(f"{transcript}:2: no audio file 1089-134691-0099.flac")):
        prepare_librispeech(librispeech_subsets, tmp_path / "out")


# LJSpeech


def test_ljspeech_uses_normalized_text_and_writes_16k_flac(tmp_path):
    counts = prepare_ljspeech(LJSPEECH, tmp_path, holdout=0.3)
    assert counts == {"train": 1, "dev": 1, "test": 1}
    utterances = {u.audio_filepath.stem: u for split in ("train", "dev", "test")
                  for u in read_manifest(tmp_path / f"{split}.jsonl")}
    # Column 2 says "of about 1455"; column 3, the normalized text, spells it out.
    assert utterances["LJ001-0007"].text == ("the earliest book printed with movable types the gutenberg "
                                            "or forty two line bible of about fourteen fifty five")
    assert utterances["LJ001-0002"].text == "in being comparatively modern"
    for name, utterance in utterances.items():
        assert utterance.audio_filepath.resolve().is_relative_to(tmp_path.resolve() / "audio" / "ljspeech")
        assert_flac_16k(utterance)
        original = load_audio(LJSPEECH / "LJSpeech-1.1" / "wavs" / f"{name}.wav")  # 22.05 kHz, resampled
        np.testing.assert_allclose(load_audio(utterance.audio_filepath), original, atol=1 / 32_768 + 1e-6)


def test_ljspeech_holdout_is_seeded(tmp_path):
    def dev(seed):
        prepare_ljspeech(LJSPEECH / "LJSpeech-1.1", tmp_path / str(seed), holdout=0.3, seed=seed)
        return read_manifest(tmp_path / str(seed) / "dev.jsonl")[0].audio_filepath.name

    assert dev(1) == dev(1)
    assert len({dev(seed) for seed in range(6)}) > 1
    with pytest.raises(CorpusError, match="cannot hold out 0.5 of the utterances"):
        prepare_ljspeech(LJSPEECH, tmp_path / "x", holdout=0.5)


def test_ljspeech_malformed_metadata(tmp_path):
    root = tmp_path / "LJSpeech-1.1"
    shutil.copytree(LJSPEECH / "LJSpeech-1.1", root)
    (root / "metadata.csv").write_text("LJ001-0002|in being comparatively modern.\n")
    with pytest.raises(CorpusError, match=re.escape(f"{root / 'metadata.csv'}:1: expected 'id|text|normalized text'")):
        prepare_ljspeech(tmp_path, tmp_path / "out")
    (root / "metadata.csv").unlink()
    with pytest.raises(CorpusError, match=re.escape(f"{root / 'metadata.csv'}: missing")):
        prepare_ljspeech(root, tmp_path / "out")


# Common Voice

CV_HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"


@pytest.fixture
def commonvoice(tmp_path):
    """A Common Voice language folder built from the Kaldi sample's clips, as MP3."""
    root = tmp_path / "cv-corpus" / "en"
    (root / "clips").mkdir(parents=True)
    rows = {"train": [("0001", "000010168", "Bye!"), ("0001", "000010173", "Trees."),
                      ("0005", "000050174", "All with 2 him")],  # digits: skipped
            "dev": [("0005", "000050175", "Good job, Café")]}
    for split, entries in rows.items():
        lines = [CV_HEADER]
        for speaker, utterance, sentence in entries:
            clip = f"common_voice_en_{utterance}.mp3"
            samples, rate = soundfile.read(KALDI / "WAVE" / f"SPEAKER{speaker}" / f"{utterance}.WAV")
            soundfile.write(root / "clips" / clip, samples, rate, format="MP3")
            lines.append(f"client{speaker}\t{clip}\t{sentence}\t2\t0\t\t\t\ten\t")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_commonvoice_converts_mp3_and_skips_digits(commonvoice, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="asr.corpora"):
        counts = prepare_commonvoice(commonvoice, tmp_path / "out")
    assert counts == {"train": 2, "dev": 1}
    assert "skipped 1 of 4 utterances" in caplog.text and "all with 2 him" in caplog.text.lower()
    train, dev = read_manifest(tmp_path / "out" / "train.jsonl"), read_manifest(tmp_path / "out" / "dev.jsonl")
    assert [u.text for u in train] == ["bye", "trees"] and [u.text for u in dev] == ["good job cafe"]
    for utterance in train + dev:
        assert utterance.audio_filepath.suffix == ".flac"
        assert_flac_16k(utterance)
        mp3 = commonvoice / "clips" / f"{utterance.audio_filepath.stem}.mp3"
        assert utterance.duration == pytest.approx(soundfile.info(mp3).duration, abs=0.06)


def test_commonvoice_sentences_with_unicode_line_breaks(commonvoice, tmp_path):
    """Only a newline ends a tsv row: U+2028, U+0085 and a form feed inside a sentence are spaces."""
    train = commonvoice / "train.tsv"
    train.write_text(train.read_text().replace("Bye!", "Bye\u2028now").replace("Trees.", "Tall\x85\x0ctrees"),
                     encoding="utf-8")
    assert prepare_commonvoice(commonvoice, tmp_path / "out") == {"train": 2, "dev": 1}
    assert [u.text for u in read_manifest(tmp_path / "out" / "train.jsonl")] == ["bye now", "tall trees"]


def test_commonvoice_unreadable_clips_are_skipped_and_counted(commonvoice, tmp_path, caplog):
    (commonvoice / "clips" / "common_voice_en_000010173.mp3").write_bytes(b"")
    (commonvoice / "clips" / "common_voice_en_000050175.mp3").write_bytes(b"ID3 not really an mp3")
    with caplog.at_level(logging.WARNING, logger="asr.corpora"):
        assert prepare_commonvoice(commonvoice, tmp_path / "out") == {"train": 1}
    warning = next(line for line in caplog.text.splitlines() if "audio unreadable" in line)
    assert "skipped 2 of 4 utterances" in warning
    assert "common_voice_en_000010173.mp3: empty file" in warning and "common_voice_en_000050175.mp3" in warning
    assert [u.text for u in read_manifest(tmp_path / "out" / "train.jsonl")] == ["bye"]
    for clip in (commonvoice / "clips").iterdir():
        clip.write_bytes(b"")
    with pytest.raises(CorpusError, match="nothing to write: no utterance has both readable audio and a transcript"):
        prepare_commonvoice(commonvoice, tmp_path / "none")


def test_commonvoice_rerun_reuses_converted_audio(commonvoice, tmp_path, monkeypatch):
    """A run killed while writing a FLAC leaves no file a rerun would take as converted; a rerun
    converts only what is missing (or older than its source)."""
    real_write = soundfile.write

    def killed_mid_write(file, samples, *args, **kwargs):
        real_write(file, samples[:len(samples) // 2], *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        prepare_commonvoice(commonvoice, tmp_path / "out")
    assert not list((tmp_path / "out").rglob("*.flac*")) and not list((tmp_path / "out").rglob(".*"))
    monkeypatch.setattr(soundfile, "write", real_write)
    assert prepare_commonvoice(commonvoice, tmp_path / "out") == {"train": 2, "dev": 1}
    converted = {path: path.stat() for path in (tmp_path / "out" / "audio").rglob("*.flac")}
    assert len(converted) == 3

    def load_audio_again(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr("asr.corpora.load_audio", load_audio_again)
    assert prepare_commonvoice(commonvoice, tmp_path / "out") == {"train": 2, "dev": 1}
    for path, stat in converted.items():
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    monkeypatch.undo()
    changed = commonvoice / "clips" / "common_voice_en_000010168.mp3"
    os.utime(changed, (changed.stat().st_atime, changed.stat().st_mtime + 3600))
    prepare_commonvoice(commonvoice, tmp_path / "out")
    assert {path for path, stat in converted.items() if path.stat().st_ino != stat.st_ino} == {
        tmp_path / "out" / "audio" / "commonvoice" / "train" / "common_voice_en_000010168.flac"}
    for utterance in read_manifest(tmp_path / "out" / "train.jsonl") + read_manifest(tmp_path / "out" / "dev.jsonl"):
        mp3 = commonvoice / "clips" / f"{utterance.audio_filepath.stem}.mp3"
        assert utterance.duration == pytest.approx(soundfile.info(mp3).duration, abs=0.06)


def test_commonvoice_corrupt_tsv(commonvoice, tmp_path):
    train = commonvoice / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:2] + ["client9\tcommon_voice_en_9.mp3\tcut short"]) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{train}:3: 3 tab-separated fields, the header has 10")):
        prepare_commonvoice(commonvoice, tmp_path / "out")
    train.write_text("\n".join(lines[:2] + [lines[2].replace("common_voice_en_000010173", "gone")]) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{train}:3: no audio file") + ".*gone.mp3"):
        prepare_commonvoice(commonvoice, tmp_path / "out")
    train.write_text("id,file,text\n1,a.mp3,hello\n")
    with pytest.raises(CorpusError, match=re.escape(f"{train}: its header has no 'path' and 'sentence'")):
        prepare_commonvoice(commonvoice, tmp_path / "out")
    with pytest.raises(CorpusError, match="no train.tsv, dev.tsv or test.tsv"):
        prepare_commonvoice(commonvoice / "clips", tmp_path / "out")


@pytest.mark.slow
def test_cli_commonvoice_corrupt_tsv_is_one_line_error(commonvoice, tmp_path):
    (commonvoice / "dev.tsv").write_bytes(b"client_id\tpath\tsentence\n\xff\xfe\n")
    result = run_cli("prepare", "commonvoice", commonvoice, "--out", tmp_path / "out")
    assert "not UTF-8 text" in assert_one_line_error(result, commonvoice / "dev.tsv")


# Kaldi


def test_kaldi_holds_out_dev_speakers(tmp_path):
    counts = prepare_kaldi(KALDI / "train", tmp_path)
    assert counts == {"train": 2, "dev": 2}  # two speakers: one held out
    train, dev = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "dev.jsonl")
    speaker = lambda u: u.audio_filepath.parent.name
    assert len({speaker(u) for u in train}) == len({speaker(u) for u in dev}) == 1
    assert {speaker(u) for u in train}.isdisjoint({speaker(u) for u in dev})
    for utterance in train + dev:  # 16 kHz mono WAV: used where it lies; paths relative to the recipe folder
        assert utterance.audio_filepath.resolve() == (KALDI / "WAVE" / speaker(utterance) /
                                                      utterance.audio_filepath.name).resolve()
        assert utterance.text == KALDI_TEXTS[utterance.audio_filepath.stem]


def test_kaldi_directory_as_a_test_split(tmp_path):
    assert prepare_kaldi(KALDI / "train", tmp_path, split="test") == {"test": 4}
    with pytest.raises(CorpusError, match="held out of a training directory"):
        prepare_kaldi(KALDI / "train", tmp_path, split="test", dev_speakers=1)


@pytest.fixture
def kaldi_dir(tmp_path):
    """A copy of the sample's data directory with absolute paths, free to edit."""
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    for name in ("text", "utt2spk"):
        shutil.copy(KALDI / "train" / name, data / name)
    lines = (KALDI / "train" / "wav.scp").read_text().splitlines()
    (data / "wav.scp").write_text("".join(f"{key} {(KALDI / path).resolve()}\n" for key, path in map(str.split, lines)))
    return data


def test_kaldi_segments_are_cut_into_flac(kaldi_dir, tmp_path):
    wav = KALDI / "WAVE" / "SPEAKER0005" / "000050174.WAV"
    (kaldi_dir / "wav.scp").write_text(f"rec1 {wav.resolve()}\n")
    (kaldi_dir / "segments").write_text("utt-a rec1 0.0 0.9\nutt-b rec1 0.9 -1\n")
    (kaldi_dir / "text").write_text("utt-a <unk> ALL WITH\nutt-b HIM [noise]\n")
    (kaldi_dir / "utt2spk").unlink()
    counts = prepare_kaldi(kaldi_dir, tmp_path / "out", dev_speakers=0)
    assert counts == {"train": 2}
    utterances = read_manifest(tmp_path / "out" / "train.jsonl")
    assert [(u.audio_filepath.name, u.text) for u in utterances] == [("utt-a.flac", "all with"), ("utt-b.flac", "him")]
    original = load_audio(wav)
    cut = 14_400  # 0.9 s
    assert [u.duration for u in utterances] == pytest.approx([0.9, len(original) / 16_000 - 0.9], abs=1e-4)
    np.testing.assert_allclose(load_audio(utterances[0].audio_filepath), original[:cut], atol=1 / 32_768 + 1e-6)
    np.testing.assert_allclose(load_audio(utterances[1].audio_filepath), original[cut:], atol=1 / 32_768 + 1e-6)


def test_kaldi_bad_segments(kaldi_dir, tmp_path):
    segments = kaldi_dir / "segments"
    segments.write_text("000010168 000010168 5.0 9.0\n")
    with pytest.raises(CorpusError, match="000010168: segment from 5 s lies outside .*000010168.WAV"):
        prepare_kaldi(kaldi_dir, tmp_path / "out", split="dev")
    segments.write_text("000010168 nowhere 0 1\n")
    with pytest.raises(CorpusError, match=re.escape(f"{segments}:1: recording nowhere is not in wav.scp")):
        kaldi_recordings(kaldi_dir)
    segments.write_text("000010168 000010168 2 1\n")
    with pytest.raises(CorpusError, match=re.escape(f"{segments}:1: segment 2-1 s is empty")):
        kaldi_recordings(kaldi_dir)


def test_kaldi_bad_directories(kaldi_dir, tmp_path):
    wav_scp = kaldi_dir / "wav.scp"
    lines = wav_scp.read_text().splitlines()
    wav_scp.write_text("\n".join(lines[:1] + ["000010173 sox WAVE/x.wav -t wav - |"]) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{wav_scp}:2: reads audio through a command")):
        kaldi_recordings(kaldi_dir)
    wav_scp.write_text("000010168 WAVE/nowhere.wav\n")
    with pytest.raises(CorpusError, match=re.escape(f"{wav_scp}:1: WAVE/nowhere.wav: no such file")):
        kaldi_recordings(kaldi_dir)
    wav_scp.write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(CorpusError, match=re.escape(f"{wav_scp}:5: 000010168 appears twice")):
        kaldi_recordings(kaldi_dir)
    wav_scp.write_text("\n".join(lines) + "\n")
    (kaldi_dir / "text").write_text("000010168 BYE\n")
    with pytest.raises(CorpusError, match="no transcript for utterance 000010173"):
        kaldi_recordings(kaldi_dir)
    (kaldi_dir / "text").unlink()
    with pytest.raises(CorpusError, match=re.escape(f"{kaldi_dir / 'text'}: missing")):
        kaldi_recordings(kaldi_dir)


@pytest.mark.slow
def test_cli_kaldi_pipe_is_one_line_error(kaldi_dir, tmp_path):
    (kaldi_dir / "wav.scp").write_text("000010168 sph2pipe -f wav rec.sph |\n")
    result = run_cli("prepare", "kaldi", kaldi_dir, "--out", tmp_path / "out")
    assert "through a command" in assert_one_line_error(result, kaldi_dir / "wav.scp")


def test_options_that_do_not_apply_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="librispeech: the dev speakers option does not apply"):
        prepare_corpus("librispeech", LIBRISPEECH, tmp_path, dev_speakers=2)
    assert prepare_corpus("kaldi", KALDI / "train", tmp_path, split="dev") == {"dev": 4}


@pytest.mark.parametrize("corpus, option, named", [
    ("ljspeech", ["--dev-speakers", "3"], "ljspeech: the dev speakers option does not apply"),
    ("librispeech", ["--seed", "1"], "librispeech: the seed option does not apply"),
    ("an4", ["--holdout", "0.1"], "an4: the holdout option does not apply"),
    ("ljspeech", ["--holdout", "0.7"], "cannot hold out 0.7"),
    ("an4", ["--dev-speakers", "-1"], "cannot hold out -1 dev speakers"),
])
def test_cli_prepare_checks_options_before_downloading(corpus, option, named, tmp_path, monkeypatch, capsys):
    import asr.download
    import cli

    fetched = []
    monkeypatch.setattr(asr.download, "fetch", lambda url, *args, **kwargs: fetched.append(url))
    monkeypatch.setattr(sys, "argv", ["asr", "prepare", corpus, str(tmp_path / "corpus"), "--out",
                                      str(tmp_path / "out"), "--download", *option])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    result = subprocess.CompletedProcess(sys.argv, exit_.value.code, "", capsys.readouterr().err)
    assert_one_line_error(result, named)
    assert fetched == []


@pytest.mark.parametrize("name", ["librispeech_100h", "librispeech_960h"])
def test_librispeech_configs_load(name):
    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config.model.bidirectional and config.model.rnn_type == "lstm"
    assert config.data.train[0] == "runs/data/librispeech/train-clean-100.jsonl"
    assert config.data.dev == ["runs/data/librispeech/dev-clean.jsonl"]
