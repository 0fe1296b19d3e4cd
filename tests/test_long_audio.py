"""Long recordings: block-wise reading, cutting at pauses, stitching words back in file time, and the
Python API (paths, arrays, tensors); the joined-recording WER check on the repository's own clips."""

from __future__ import annotations

import difflib
import json
import multiprocessing
import re

import numpy as np
import pytest
import soundfile
import torch

from asr import SegmentOptions, load_model, transcribe, transcribe_files
from asr.audio import AudioError, RawFormat, load_audio, stream_audio
from asr.evaluate import error_rates
from asr.segment import SegmentError, segment_stream
from helpers import AN4, FSDD, REPO, SAMPLES

BIG_ENDIAN = RawFormat(byte_order="big")
GAP = 0.3  # seconds of digital silence between joined utterances


def an4_clips() -> list[tuple[np.ndarray, str]]:
    """The AN4 test clips and the bundled AN4 samples (16 kHz samples, transcript), in a fixed order.

    Not FSDD's digits: each is cut tight around its word, so 0.3 s gaps make pauses shorter
    than the 0.6 s that end a segment, and the model, trained on one utterance at a time,
    does badly on a run of them transcribed together.
    """
    references = {}
    for line in (AN4 / "etc" / "an4_train.transcription").read_text().splitlines():
        match = re.fullmatch(r"<s> (.*) </s> \((.*)\)", line.strip())
        references[match[2]] = match[1].lower()
    clips = [(load_audio(path, raw=BIG_ENDIAN), references[path.stem])
             for path in sorted((AN4 / "wav" / "an4_clstk").glob("*/*.raw"))]
    bundled = REPO / "data" / "samples"
    for line in (bundled / "samples.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["audio_filepath"].startswith("an4-"):
            clips.append((load_audio(bundled / entry["audio_filepath"]), entry["text"]))
    return clips


def joined(clips: list[np.ndarray], gap: float = GAP) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The clips one after another with ``gap`` s of silence after each, and where each one lies."""
    parts, bounds, position = [], [], 0
    for clip in clips:
        parts += [clip, np.zeros(round(gap * 16_000), dtype=np.float32)]
        bounds.append((position, position + len(clip)))
        position += len(clip) + len(parts[-1])
    return np.concatenate(parts), bounds


@pytest.fixture(scope="module")
def recognizer():
    return load_model(device="cpu")


@pytest.fixture(scope="module")
def greedy(recognizer):
    decoder = recognizer.decoder("greedy")
    yield decoder
    decoder.close()


# ---------------------------------------------------------------- reading in blocks


@pytest.mark.parametrize("path, raw", [
    (FSDD / "recordings" / "7_george_0.wav", None),  # 8 kHz: resampled block by block
    (SAMPLES / "LJ001-0002.flac", None),  # 22.05 kHz
    ("mp3", None),
    (AN4 / "wav" / "an4_clstk" / "fash" / "an251-fash-b.raw", BIG_ENDIAN),
])
def test_streamed_blocks_join_into_what_load_audio_reads(path, raw, tmp_path):
    if path == "mp3":  # written here: the sample MP3 has damaged frames, which decode differently by read size
        path = tmp_path / "clip.mp3"
        soundfile.write(path, load_audio(SAMPLES / "LJ001-0002.flac"), 16_000, format="MP3")
    blocks = list(stream_audio(path, raw=raw, block_seconds=0.137))
    assert len(blocks) > 3
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(path, raw=raw), atol=1e-6)


# ---------------------------------------------------------------- cutting at pauses


def test_cuts_fall_between_utterances_and_keep_all_speech():
    clips = [clip for clip, _ in an4_clips()]
    audio, bounds = joined(clips)
    segments = list(segment_stream([audio]))
    spans = [(segment.start, segment.end) for segment in segments]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "segments overlap or are out of order"
    for segment in segments:
        np.testing.assert_array_equal(segment.samples, audio[segment.start:segment.end])
    # Every loud sample (over a third of its clip's peak) is in a segment: no speech is dropped.
    covered = np.zeros(len(audio), dtype=bool)
    for start, end in spans:
        covered[start:end] = True
    for start, end in bounds:
        clip = np.abs(audio[start:end])
        assert covered[start:end][clip > clip.max() / 3].all()
    # One segment per utterance, give or take: no segment holds the peaks of more than two clips.
    assert len(clips) - 2 <= len(segments) <= len(clips) + 3
    peaks = [start + int(np.argmax(np.abs(audio[start:end]))) for start, end in bounds]
    assert all(sum(a <= peak < b for peak in peaks) <= 2 for a, b in spans)


def test_segmenting_does_not_depend_on_how_the_stream_is_blocked():
    audio, _ = joined([clip for clip, _ in an4_clips()])
    whole = [(s.start, s.end) for s in segment_stream([audio])]
    blocked = [(s.start, s.end) for s in segment_stream(audio[i:i + 1234] for i in range(0, len(audio), 1234))]
    assert whole == blocked


def test_speech_without_pauses_is_cut_at_most_max_seconds_apart_and_nothing_dropped():
    clips = [clip for clip, _ in an4_clips()]
    audio = np.concatenate(clips * 2)  # no gaps: about a minute of speech with only the clips' own pauses
    options = SegmentOptions(max_seconds=3.0, min_pause=5.0)  # no pause is long enough to cut at
    segments = list(segment_stream([audio], options))
    assert all(len(segment.samples) <= 3.0 * 16_000 for segment in segments)
    assert all(a.end == b.start for a, b in zip(segments, segments[1:])), "a forced cut must drop nothing"
    assert segments[0].start == 0
    assert len(audio) - segments[-1].end < 0.5 * 16_000  # at most a trailing pause, after a cut in it


def test_silence_has_no_segments_and_a_lone_word_one():
    assert list(segment_stream([np.zeros(16_000 * 40, dtype=np.float32)])) == []
    noise = np.random.default_rng(0).standard_normal(16_000 * 5).astype(np.float32) * 1e-3
    assert list(segment_stream([noise])) == []
    word = load_audio(FSDD / "recordings" / "3_jackson_0.wav")
    (segment,) = segment_stream([np.concatenate([noise, word, noise])])
    assert segment.start <= len(noise) and segment.end >= len(noise) + len(word)


@pytest.mark.parametrize("bad", [dict(max_seconds=0.5), dict(min_pause=0), dict(padding=-1), dict(threshold_db=0)])
def test_nonsense_options_are_refused(bad):
    with pytest.raises(SegmentError):
        list(segment_stream([np.zeros(100, dtype=np.float32)], SegmentOptions(**bad)))


# ---------------------------------------------------------------- no words lost or doubled at the cuts


def test_joined_recording_is_transcribed_as_well_as_its_utterances_one_by_one(recognizer, greedy):
    clips, references = zip(*an4_clips())
    separate = [transcribe(recognizer, clip, 16_000, greedy) for clip in clips]
    audio, bounds = joined(list(clips))
    whole = transcribe(recognizer, audio, 16_000, greedy)
    one_by_one = error_rates(list(references), [transcript.text for transcript in separate])
    together = error_rates([" ".join(references)], [whole.text])
    assert together.word_errors <= 1.1 * one_by_one.word_errors, whole.text
    # The words come back in the recording's own time: where they are in their own clip, shifted by its start.
    assert whole.duration == pytest.approx(len(audio) / 16_000)
    assert [word.start for word in whole.words] == sorted(word.start for word in whole.words)
    alone = [(word, start / 16_000) for (start, _), transcript in zip(bounds, separate) for word in transcript.words]
    # What surrounds a clip can change a letter here and there; the words that agree are compared.
    matcher = difflib.SequenceMatcher(a=[word.word for word in whole.words], b=[word.word for word, _ in alone],
                                      autojunk=False)
    pairs = [(whole.words[block.a + k], alone[block.b + k]) for block in matcher.get_matching_blocks()
             for k in range(block.size)]
    assert len(pairs) >= 0.9 * len(alone), (len(pairs), len(alone))
    # CTC's timing of a clip's first and last letters shifts with what surrounds the clip: a clip cut at a
    # pause can have its last letter's spike held to the cut (0.75 s late for one spelled letter with the
    # bundled model). A word placed at the wrong offset would be off by a clip's length and the gap, over 1 s.
    shifts = np.array([[word.start - by_itself.start - offset, word.end - by_itself.end - offset]
                       for word, (by_itself, offset) in pairs])
    assert np.abs(shifts).max() < 1.0
    assert np.median(np.abs(shifts)) <= 0.02


# ---------------------------------------------------------------- the Python API


def test_path_array_and_tensor_give_the_same_transcript(recognizer, greedy, tmp_path):
    path = REPO / "data" / "samples" / "an4-cen6-mmkw-b.flac"
    samples, rate = soundfile.read(path, dtype="float32")
    stereo_48k = tmp_path / "stereo.wav"
    soundfile.write(stereo_48k, np.stack([samples, samples], axis=1), rate)
    from_path = transcribe(recognizer, path, decoder=greedy)
    assert from_path.text == "two nine six six two" and from_path.path == str(path)
    for result in (transcribe(recognizer, samples, rate, greedy),
                   transcribe(recognizer, torch.from_numpy(samples)[None], rate, greedy),
                   transcribe(recognizer, (samples * 32767).astype(np.int16), rate, greedy),
                   transcribe(recognizer, np.stack([samples, samples], axis=1), rate, greedy)):
        assert result.text == from_path.text
        assert [(w.word, w.start, w.end) for w in result.words] == [(w.word, w.start, w.end) for w in from_path.words]
    (listed,) = transcribe_files(recognizer, [path], greedy)
    assert listed.words == from_path.words
    assert transcribe(recognizer, np.zeros(32_000, dtype=np.float32), 16_000, greedy).text == ""
    assert transcribe(recognizer, np.zeros(32_000, dtype=np.float32), 16_000, greedy).duration == 2.0


def test_python_api_errors_name_the_input(recognizer, greedy, tmp_path):
    with pytest.raises(AudioError, match="sample rate"):
        transcribe(recognizer, np.zeros(100, dtype=np.float32), decoder=greedy)
    with pytest.raises(AudioError, match=re.escape(str(tmp_path / "missing.wav"))):
        transcribe(recognizer, tmp_path / "missing.wav", decoder=greedy)
    with pytest.raises(AudioError, match="is a directory"):
        transcribe(recognizer, tmp_path, decoder=greedy)


def test_words_end_within_the_recording(recognizer, greedy):
    # The model's last frame reaches past the last sample; a word cannot end after its audio does.
    for path in sorted((REPO / "data" / "samples").glob("*.flac")):
        transcript = transcribe(recognizer, path, decoder=greedy)
        assert transcript.words and transcript.words[-1].end <= transcript.duration, path


@pytest.mark.slow
def test_transcribe_files_closes_the_decoder_it_builds(recognizer, monkeypatch):
    beam = recognizer.decoder("beam", workers=2)  # with the model's LM; two utterances at once start its pool
    monkeypatch.setattr(recognizer, "decoder", lambda: beam)
    paths = [REPO / "data" / "samples" / name for name in ("an4-an26-mdxs-b.flac", "fsdd-5_nicolas_23.flac")]
    assert [transcript.text for transcript in transcribe_files(recognizer, paths)] == ["yes", "five"]
    assert multiprocessing.active_children() == []  # the beam-search workers were stopped


def test_the_long_audio_benchmark_measures_the_command_not_itself():
    """Peak memory of a fresh process, not this one's: a forked child counts the parent's pages until it execs."""
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from long_audio import run_measured
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    held = np.ones(300 * 2**20 // 8)  # 300 MB in this process
    seconds, megabytes = run_measured([sys.executable, "-c", "pass"])
    assert held.sum() > 0 and 0 < seconds < 30 and megabytes < 100
