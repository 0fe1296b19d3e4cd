"""Manifests, the duration-bucketing batch sampler, collation and the speech dataset."""

from __future__ import annotations

import json
import random
import re
import shutil

import pytest
import torch

from asr.data import (Batch, DurationBatchSampler, ManifestError, SpeechDataset, Utterance, collate,
                      read_manifest, write_manifest)
from asr.errors import AsrError
from asr.text import TextError, Vocabulary
from helpers import FSDD

SEVEN = FSDD / "recordings" / "7_george_0.wav"


def write_lines(path, *lines: str):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def entry(audio="a.wav", duration=1.0, text="hello") -> str:
    return json.dumps({"audio_filepath": audio, "duration": duration, "text": text})


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, monkeypatch):
    folder = tmp_path / "sets"
    folder.mkdir()
    write_lines(folder / "m.jsonl", entry("audio/a.wav", 1.5, "one"), "",
                entry(str(tmp_path / "abs.wav"), 2, "two"))
    monkeypatch.chdir(tmp_path)  # not the manifest's folder
    utterances = read_manifest("sets/m.jsonl")
    assert [u.text for u in utterances] == ["one", "two"]
    assert [u.duration for u in utterances] == [1.5, 2.0]
    assert utterances[0].audio_filepath.resolve() == (folder / "audio" / "a.wav").resolve()
    assert utterances[1].audio_filepath == tmp_path / "abs.wav"


@pytest.mark.parametrize("bad_line, problem", [
    ("{not json", "not a JSON object"),
    (json.dumps({"audio_filepath": "a.wav", "text": "hi"}), "needs audio_filepath, duration and text"),
    (json.dumps({"duration": 1, "text": "hi"}), "needs audio_filepath, duration and text"),
    (json.dumps({"audio_filepath": "a.wav", "duration": 1}), "needs audio_filepath, duration and text"),
    (json.dumps(["a.wav", 1, "hi"]), "needs audio_filepath, duration and text"),
    (entry(duration="long"), "duration must be a number"),
    (entry(duration=-1), "non-negative"),
    (entry(text=5), "must be strings"),
], ids=["not-json", "no-duration", "no-audio", "no-text", "json-list", "duration-text", "negative", "text-int"])
def test_bad_lines_name_file_and_line(tmp_path, bad_line, problem):
    manifest = write_lines(tmp_path / "m.jsonl", entry(), "", bad_line, entry())
    with pytest.raises(ManifestError) as error:
        read_manifest(manifest)
    message = str(error.value)
    assert message.startswith(f"{manifest}:3: "), message  # line numbers count blank lines too
    assert problem in message
    assert "\n" not in message
    assert isinstance(error.value, AsrError)


@pytest.mark.parametrize("setup, problem", [
    (lambda p: None, "no such manifest"),
    (lambda p: p.write_text("\n\n"), "no utterances"),
    (lambda p: p.write_bytes(b'{"text": "\xff\xfe"}\n'), "not UTF-8"),
])
def test_unusable_manifests(tmp_path, setup, problem):
    manifest = tmp_path / "m.jsonl"
    setup(manifest)
    with pytest.raises(ManifestError, match=re.escape(str(manifest)) + ".*" + problem):
        read_manifest(manifest)


def test_write_manifest_round_trip(tmp_path):
    folder = tmp_path / "out" / "set"  # does not exist yet
    inside = folder / "audio" / "x.flac"
    outside = tmp_path / "elsewhere" / "y.wav"
    utterances = [Utterance(inside, 1.23456789, "hello there"), Utterance(outside, 0.5, "don't")]
    manifest = folder / "m.jsonl"
    write_manifest(manifest, utterances)
    raw = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert raw[0] == {"audio_filepath": "audio/x.flac", "duration": 1.2346, "text": "hello there"}
    assert raw[1]["audio_filepath"] == str(outside.resolve())  # outside the manifest's folder: absolute
    back = read_manifest(manifest)
    assert [u.audio_filepath.resolve() for u in back] == [inside.resolve(), outside.resolve()]
    assert [u.duration for u in back] == [1.2346, 0.5]
    assert [u.text for u in back] == ["hello there", "don't"]
    assert sorted(p.name for p in folder.iterdir()) == ["m.jsonl"], "temporary file left behind"
    write_manifest(manifest, utterances[:1])  # overwrites in place
    assert len(read_manifest(manifest)) == 1


def test_write_manifest_paths_survive_moving_the_folder(tmp_path):
    folder = tmp_path / "set"
    write_manifest(folder / "m.jsonl", [Utterance(folder / "a.wav", 1.0, "a")])
    shutil.move(folder, tmp_path / "moved")
    assert read_manifest(tmp_path / "moved" / "m.jsonl")[0].audio_filepath.resolve() == (tmp_path / "moved" / "a.wav").resolve()


def random_durations(n=200, seed=1):
    generator = random.Random(seed)
    return [round(generator.uniform(0.3, 12.0), 1) for _ in range(n)] + [30.0, 25.0]  # two longer than a batch


def test_sampler_uses_every_index_once_within_the_budget():
    durations = random_durations()
    sampler = DurationBatchSampler(durations, batch_seconds=20.0, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(durations)))
        for batch in batches:
            assert batch
            longest = max(durations[i] for i in batch)
            assert longest * len(batch) <= 20.0 or len(batch) == 1, (batch, longest)


def test_sampler_sizes_each_epochs_batches_by_that_epochs_durations():
    recorded = random_durations()

    drawn_for = []

    def lengths_in(epoch: int) -> list[float]:  # as speed perturbation draws a speed per utterance and epoch
        return [d / (0.9, 1.0, 1.1)[(i * 7 + epoch) % 3] for i, d in enumerate(recorded)]

    def durations(epoch: int) -> list[float]:
        drawn_for.append(epoch)
        return lengths_in(epoch)

    sampler = DurationBatchSampler(durations, batch_seconds=20.0, seed=3)
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        lengths = lengths_in(epoch)
        batches = list(sampler)
        assert batches == sampler.batches(epoch) and len(sampler) == len(batches)
        assert sorted(i for batch in batches for i in batch) == list(range(len(recorded)))
        for batch in batches:
            assert max(lengths[i] for i in batch) * len(batch) <= 20.0 or len(batch) == 1
        padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
        assert sum(lengths) / padded > 0.9, "a batch's utterances should be about as long as each other"
    assert drawn_for == [1, 2], "each epoch's durations are drawn once however often its batches are asked for"
    assert sampler.batches(1) != sampler.batches(2)


def test_sampler_batches_are_full_enough():
    """Sorting by duration keeps padding low: each batch cannot take the next utterance in line."""
    durations = random_durations()
    batches = DurationBatchSampler(durations, batch_seconds=20.0, shuffle=False).batches()
    for batch, following in zip(batches, batches[1:]):
        assert max(durations[i] for i in following) * (len(batch) + 1) > 20.0


def test_sampler_order_depends_only_on_seed_and_epoch():
    durations = random_durations()
    a = DurationBatchSampler(durations, 20.0, seed=7)
    b = DurationBatchSampler(durations, 20.0, seed=7)
    a.set_epoch(4)
    b.set_epoch(4)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again does not advance anything
    b.set_epoch(5)
    assert list(a) != list(b)
    assert sorted(map(sorted, a)) != sorted(map(sorted, b)), "tied durations should be grouped differently"
    other_seed = DurationBatchSampler(durations, 20.0, seed=8)
    other_seed.set_epoch(4)
    assert list(other_seed) != list(a)


def test_unshuffled_sampler_is_sorted_and_stable():
    durations = [3.0, 1.0, 2.0, 1.0, 5.0]
    sampler = DurationBatchSampler(durations, batch_seconds=4.0, shuffle=False)
    assert list(sampler) == [[1, 3], [2], [0], [4]]
    sampler.set_epoch(9)
    assert list(sampler) == [[1, 3], [2], [0], [4]]


def test_collate_pads_and_records_lengths():
    items = [(torch.ones(5), torch.tensor([3, 4])), (torch.full((2,), 2.0), torch.tensor([5, 6, 7]))]
    batch = collate(items)
    assert isinstance(batch, Batch)
    assert batch.waveforms.tolist() == [[1, 1, 1, 1, 1], [2, 2, 0, 0, 0]]
    assert batch.lengths.tolist() == [5, 2]
    assert batch.targets.tolist() == [[3, 4, 0], [5, 6, 7]]
    assert batch.target_lengths.tolist() == [2, 3]
    moved = batch.to(torch.device("cpu"))
    assert torch.equal(moved.waveforms, batch.waveforms) and torch.equal(moved.target_lengths, batch.target_lengths)


def test_speech_dataset_items():
    dataset = SpeechDataset([Utterance(SEVEN, 0.64, "Seven!")], Vocabulary())
    assert len(dataset) == 1
    waveform, target = dataset[0]
    assert waveform.dtype == torch.float32 and waveform.ndim == 1 and len(waveform) == pytest.approx(10_262, abs=2)
    assert Vocabulary().decode(target.tolist()) == "seven"


def test_speech_dataset_names_the_audio_file_of_a_bad_transcript():
    good = Utterance(SEVEN, 0.64, "seven")
    bad = Utterance(FSDD / "recordings" / "3_george_0.wav", 0.5, "call 911")
    with pytest.raises(TextError) as error:
        SpeechDataset([good, bad], Vocabulary(), source="train.jsonl")
    message = str(error.value)
    assert "train.jsonl" in message
    assert "3_george_0.wav" in message
    assert "'19'" in message  # the offending characters
