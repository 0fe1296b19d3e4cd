"""Corpus preparation: AN4 (raw and SPHERE layouts) and FSDD into speaker-disjoint manifests."""

from __future__ import annotations

import re

import numpy as np
import pytest
import soundfile

from asr.audio import RawFormat, load_audio
from asr.corpora import CorpusError, an4_recordings, prepare_an4, prepare_fsdd
from asr.data import read_manifest
from helpers import AN4, FSDD, assert_one_line_error, rms, run_cli

AN4_TEXTS = {  # tests/data/an4/etc/an4_train.transcription, normalised
    "an253-fash-b": "go", "an251-fash-b": "yes", "an254-fash-b": "yes", "cen2-fash-b": "a m y",
    "cen1-fash-b": "h i n i c h", "an255-fash-b": "u m n y h six", "an199-mgah-b": "no",
    "cen1-mgah-b": "h o y", "an200-mgah-b": "start", "cen2-mgah-b": "g l e n n",
    "cen4-mgah-b": "r u s k i n", "cen3-mgah-b": "one two zero",
}


def speaker(utterance) -> str:
    return utterance.audio_filepath.stem.split("-")[1]


def test_prepare_an4_writes_speaker_disjoint_train_and_dev(an4_prepared):
    assert sorted(p.name for p in an4_prepared.glob("*.jsonl")) == ["dev.jsonl", "train.jsonl"]
    train, dev = read_manifest(an4_prepared / "train.jsonl"), read_manifest(an4_prepared / "dev.jsonl")
    assert len(train) == len(dev) == 6  # each of the two speakers has six utterances
    assert {speaker(u) for u in train}.isdisjoint({speaker(u) for u in dev})
    assert len({speaker(u) for u in train}) == len({speaker(u) for u in dev}) == 1
    for utterance in train + dev:
        assert utterance.text == AN4_TEXTS[utterance.audio_filepath.stem]
        assert utterance.audio_filepath.suffix == ".flac"
        assert utterance.audio_filepath.resolve().is_relative_to(an4_prepared.resolve())
    # Audio paths are relative in the file, so the prepared folder can move.
    first = (an4_prepared / "train.jsonl").read_text().splitlines()[0]
    assert '"audio_filepath": "audio/an4/' in first


def test_prepared_an4_audio_is_decoded_big_endian(an4_prepared):
    for utterance in read_manifest(an4_prepared / "train.jsonl") + read_manifest(an4_prepared / "dev.jsonl"):
        info = soundfile.info(utterance.audio_filepath)
        assert (info.format, info.samplerate, info.channels, info.subtype) == ("FLAC", 16_000, 1, "PCM_16")
        assert utterance.duration == pytest.approx(info.frames / 16_000, abs=1e-4)
        original = AN4 / "wav" / "an4_clstk" / speaker(utterance) / f"{utterance.audio_filepath.stem}.raw"
        assert utterance.duration == pytest.approx(original.stat().st_size / 32_000, abs=1e-4)
        samples = load_audio(utterance.audio_filepath)
        assert 1e-4 < rms(samples) < 0.3, f"{utterance.audio_filepath}: not speech (rms {rms(samples):.3f})"
        expected = load_audio(original, raw=RawFormat(byte_order="big"))
        np.testing.assert_allclose(samples, expected, atol=1 / 32_768 + 1e-7)


def test_prepare_an4_dev_speakers_are_chosen_by_seed(tmp_path):
    choices = set()
    for seed in range(6):
        prepare_an4(AN4, tmp_path / str(seed), dev_speakers=1, seed=seed)
        choices.add(speaker(read_manifest(tmp_path / str(seed) / "dev.jsonl")[0]))
    assert choices == {"fash", "mgah"}


def test_prepare_an4_needs_a_training_speaker_left(tmp_path):
    with pytest.raises(CorpusError, match="2 training speakers"):
        prepare_an4(AN4, tmp_path / "out")  # the default holds out 7 speakers


@pytest.fixture(scope="module")
def an4_sphere(tmp_path_factory):
    """tests/data/an4 in the SPHERE layout of the full download, with a test split:
    fash and mgah as training speakers, and two of mgah's utterances re-labelled as a test speaker."""
    root = tmp_path_factory.mktemp("an4_sphere")
    (root / "etc").mkdir()
    train_lines, test_lines = [], []
    for line in (AN4 / "etc" / "an4_train.transcription").read_text().splitlines():
        utterance_id = re.search(r"\((.+)\)", line).group(1)
        spk = utterance_id.split("-")[1]
        samples = load_audio(AN4 / "wav" / "an4_clstk" / spk / f"{utterance_id}.raw", raw=RawFormat(byte_order="big"))
        if utterance_id in ("cen3-mgah-b", "cen4-mgah-b"):
            folder, utterance_id, target = "an4test_clstk", utterance_id.replace("mgah", "mtst"), test_lines
            line = re.sub(r"\(.+\)", f"({utterance_id})", line)
            spk = "mtst"
        else:
            folder, target = "an4_clstk", train_lines
        (root / "wav" / folder / spk).mkdir(parents=True, exist_ok=True)
        soundfile.write(root / "wav" / folder / spk / f"{utterance_id}.sph", samples, 16_000, format="NIST",
                        subtype="PCM_16")
        target.append(line)
    (root / "etc" / "an4_train.transcription").write_text("\n".join(train_lines) + "\n")
    (root / "etc" / "an4_test.transcription").write_text("\n".join(test_lines) + "\n")
    return root


def test_prepare_an4_sphere_layout_with_test_split(an4_sphere, tmp_path):
    counts = prepare_an4(an4_sphere, tmp_path, dev_speakers=1)
    assert counts["test"] == 2 and counts["train"] + counts["dev"] == 10
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == ["dev.jsonl", "test.jsonl", "train.jsonl"]
    test = read_manifest(tmp_path / "test.jsonl")
    assert sorted(u.text for u in test) == ["one two zero", "r u s k i n"]
    train, dev = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "dev.jsonl")
    speakers = [{speaker(u) for u in split} for split in (train, dev, test)]
    assert speakers[2] == {"mtst"}
    assert not (speakers[0] & speakers[1]) and not (speakers[0] & speakers[2]) and not (speakers[1] & speakers[2])
    for utterance in test + train:
        assert utterance.audio_filepath.suffix == ".flac"
        samples = load_audio(utterance.audio_filepath)
        assert 1e-4 < rms(samples) < 0.3
        assert len(samples) == pytest.approx(utterance.duration * 16_000, abs=1)


def test_an4_transcript_naming_missing_audio(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "wav" / "an4_clstk" / "spk").mkdir(parents=True)
    transcript = tmp_path / "etc" / "an4_train.transcription"
    transcript.write_text("<s> HELLO </s> (nowhere-spk-b)\n")
    with pytest.raises(CorpusError, match=re.escape(f"{transcript}:1") + ".*nowhere-spk-b"):
        an4_recordings(tmp_path)
    transcript.write_text("\n<s> HELLO </s> without an id\n")
    with pytest.raises(CorpusError, match=re.escape(f"{transcript}:2")):
        an4_recordings(tmp_path)


def test_an4_folder_without_transcripts(tmp_path):
    with pytest.raises(CorpusError, match="an4_train.transcription"):
        an4_recordings(tmp_path)


def test_prepare_fsdd_digits_become_words(fsdd_prepared):
    train, dev = read_manifest(fsdd_prepared / "train.jsonl"), read_manifest(fsdd_prepared / "dev.jsonl")
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for utterance in train + dev:
        digit = int(utterance.audio_filepath.name[0])
        assert utterance.text == words[digit]
        assert utterance.audio_filepath.resolve() == (FSDD / "recordings" / utterance.audio_filepath.name).resolve()
        assert utterance.duration == pytest.approx(soundfile.info(utterance.audio_filepath).duration, abs=1e-4)
    fsdd_speaker = lambda u: u.audio_filepath.stem.split("_")[1]
    assert {fsdd_speaker(u) for u in train}.isdisjoint({fsdd_speaker(u) for u in dev})
    assert sorted(u.text for u in dev) == sorted(words)
    assert {u.audio_filepath.name: u.text for u in train + dev}["7_george_0.wav"] == "seven"


def test_prepare_fsdd_accepts_the_recordings_folder_itself(tmp_path):
    counts = prepare_fsdd(FSDD / "recordings", tmp_path, dev_speakers=1)
    assert counts == {"train": 10, "dev": 10}


def test_prepare_fsdd_without_recordings(tmp_path):
    (tmp_path / "notes.wav").write_text("x")
    with pytest.raises(CorpusError, match="no FSDD recordings"):
        prepare_fsdd(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_cli_prepare_missing_folder_is_one_line_error(tmp_path):
    missing = tmp_path / "no_such_an4"
    result = run_cli("prepare", "an4", missing, "--out", tmp_path / "out")
    assert_one_line_error(result, missing)
    assert not (tmp_path / "out" / "train.jsonl").exists()
