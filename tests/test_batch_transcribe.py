"""`asr transcribe` over folders, patterns and hostile files: outputs, resuming, one-line errors.

The hostile corpus is made here, in a temporary folder, from the repository's clips: each
file either transcribes (silence to an empty transcript) or gets one `error:` line naming
it, and none stops the others, hangs or prints a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct

import numpy as np
import pytest
import soundfile

from asr.audio import load_audio
from asr.evaluate import error_rates
from asr.transcribe_job import AudioFile, find_audio
from helpers import FSDD, REPO, SAMPLES, assert_one_line_error, run_cli

CLIP = REPO / "data" / "samples" / "an4-cen6-mmkw-b.flac"  # "two nine six six two", 16 kHz
SUMMARY = re.compile(r"^(\d+) transcribed, (\d+) failed, (\d+) skipped: \d+\.\d\d h of audio in \d+\.\d s"
                     r"(, real-time factor \d+\.\d+)?$")


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def patched_rate(path, rate: int) -> None:
    """A 16-bit WAV whose header claims ``rate`` Hz."""
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)
    data[28:32] = struct.pack("<I", (rate * 2) & 0xFFFFFFFF)
    path.write_bytes(data)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{file name: what should happen} for a folder of broken and odd inputs."""
    folder = tmp_path_factory.mktemp("hostile")
    speech, rate = soundfile.read(CLIP, dtype="float32")
    expect = {}

    def make(name: str, outcome: str):
        expect[name] = outcome
        return folder / name

    make("empty.wav", "error").touch()
    soundfile.write(make("header-only.wav", "error"), np.zeros(0, dtype=np.float32), 16_000)
    flac = (SAMPLES / "LJ001-0002.flac").read_bytes()
    make("truncated.flac", "error").write_bytes(flac[:len(flac) // 2])
    make("notes.wav", "error").write_text("this is not audio\n")
    make("random.mp3", "error").write_bytes(np.random.default_rng(0).bytes(5000))
    for name, claimed in (("zero-hz.wav", 0), ("absurd-rate.wav", 3_000_000_000), ("one-hz.wav", 1)):
        soundfile.write(make(name, "error"), speech, 16_000, subtype="PCM_16")
        patched_rate(folder / name, claimed)
    soundfile.write(make("nan.wav", "empty"), np.full(16_000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    soundfile.write(make("silence.wav", "empty"), np.zeros(48_000, dtype=np.float32), 16_000)
    square = np.sign(np.sin(2 * np.pi * 220 * np.arange(16_000) / 16_000)).astype(np.float32)
    soundfile.write(make("clipping.wav", "any"), square, 16_000, subtype="PCM_16")
    upsampled = load_audio(CLIP, 48_000)
    soundfile.write(make("six-channels-48k.wav", "speech"), np.repeat(upsampled[:, None], 6, axis=1), 48_000)
    for subtype in ("PCM_24", "FLOAT"):
        soundfile.write(make(f"{subtype.lower()}.wav", "speech"), speech, rate, subtype=subtype)
    soundfile.write(make("pcm_u8.wav", "coarse speech"), speech, rate, subtype="PCM_U8")  # audible quantisation noise
    shutil.copyfile(CLIP, make("voice note — café ünïcode.flac", "speech"))
    shutil.copyfile(CLIP, make("unreadable.flac", "speech" if os.geteuid() == 0 else "error"))
    os.chmod(folder / "unreadable.flac", 0)  # root reads it all the same
    # Not regular files, so a folder's walk passes them by; named, they are errors (see below).
    os.mkfifo(folder / "fifo.wav")  # opening it for reading would wait for a writer forever
    (folder / "folder.wav").mkdir()
    shutil.copyfile(CLIP, folder / "._hidden.wav")  # hidden (macOS resource forks): skipped
    return folder, expect


@pytest.mark.slow
def test_hostile_folder(hostile, tmp_path):
    folder, expect = hostile
    out = tmp_path / "out"
    result = run_cli("transcribe", folder, "--output-dir", out, "--format", "json", "--decoder", "greedy", timeout=240)
    assert result.returncode == 2
    errors, lines = error_lines(result.stderr), result.stderr.strip().splitlines()
    assert lines == errors + lines[-1:] and SUMMARY.match(lines[-1]), "error lines, then the job's summary"
    failing = sorted(name for name, outcome in expect.items() if outcome == "error")
    assert len(errors) == len(failing), errors
    for name in failing:
        (line,) = [line for line in errors if str(folder / name) in line]
        assert not (out / name).with_suffix(".json").exists()
    written = {path.name: json.loads(path.read_text(encoding="utf-8")) for path in out.iterdir()}
    assert set(written) == {f"{os.path.splitext(name)[0]}.json" for name, outcome in expect.items() if outcome != "error"}
    for name, outcome in expect.items():
        if outcome == "error":
            continue
        transcript = written[f"{os.path.splitext(name)[0]}.json"]
        assert transcript["path"] == str(folder / name)
        if outcome == "empty":
            assert transcript["text"] == "" and transcript["words"] == []
        if outcome in ("speech", "coarse speech"):
            wer = error_rates(["two nine six six two"], [transcript["text"]]).wer
            assert wer == 0 if outcome == "speech" else wer <= 0.4, (name, transcript["text"])
            assert transcript["duration"] == pytest.approx(3.6, abs=0.05)


@pytest.mark.slow
def test_hostile_files_named_one_by_one(hostile):
    folder, expect = hostile
    result = run_cli("transcribe", folder / "folder.wav", folder / "empty.wav", folder / "silence.wav",
                     folder / "fifo.wav", folder / "voice note — café ünïcode.flac", folder / "missing.wav",
                     "--decoder", "greedy", timeout=60)
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert errors == [f"error: {folder / 'folder.wav'}: no audio files in this folder",
                      f"error: {folder / 'empty.wav'}: empty file",
                      f"error: {folder / 'fifo.wav'}: not a regular file",
                      f"error: {folder / 'missing.wav'}: no such file"]
    assert result.stdout.splitlines() == [f"{folder / 'silence.wav'}\t",
                                          f"{folder / 'voice note — café ünïcode.flac'}\ttwo nine six six two"]


@pytest.fixture
def tree(tmp_path):
    """Voice notes in nested folders, with a file that is not audio beside them."""
    root = tmp_path / "notes"
    for relative in ("a.flac", "2024/b.wav", "2024/march/c.flac"):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        samples, rate = soundfile.read(CLIP)
        soundfile.write(root / relative, samples, rate)
    (root / "2024" / "readme.txt").write_text("not audio")
    return root


def test_find_audio_walks_folders_and_patterns(tree, tmp_path):
    found, problems = find_audio([tree, str(tree / "2024" / "*.wav"), tmp_path / "missing.wav", str(tmp_path / "*.ogg")])
    assert found == [AudioFile(tree / "2024" / "b.wav", tree), AudioFile(tree / "2024" / "march" / "c.flac", tree),
                     AudioFile(tree / "a.flac", tree), AudioFile(tmp_path / "missing.wav")]  # b.wav once
    assert problems == [f"{tmp_path / '*.ogg'}: no files match this pattern"]


@pytest.mark.slow
def test_output_dir_mirrors_folders_resumes_and_summarises(tree, tmp_path):
    out = tmp_path / "out"
    first = run_cli("transcribe", tree, FSDD / "recordings" / "3_*.wav", "--output-dir", out, "--format", "srt",
                    "--decoder", "greedy", "--progress", "--batch-seconds", "5", "--workers", "3")
    assert first.returncode == 0, first.stderr
    made = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert made == ["2024/b.srt", "2024/march/c.srt", "3_george_0.srt", "3_jackson_0.srt", "a.srt"]
    assert "two nine six six two" in (out / "2024" / "march" / "c.srt").read_text()
    (summary,) = first.stderr.splitlines()  # the progress bar is off under TQDM_DISABLE
    assert SUMMARY.match(summary) and SUMMARY.match(summary).groups()[:3] == ("5", "0", "0"), summary

    (out / "a.srt").unlink()
    (out / "2024" / "b.srt").write_text("kept\n")
    again = run_cli("transcribe", tree, FSDD / "recordings" / "3_*.wav", "--output-dir", out, "--format", "srt",
                    "--decoder", "greedy", "--progress", "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert SUMMARY.match(again.stderr.strip()).groups()[:3] == ("1", "0", "4"), again.stderr
    assert (out / "2024" / "b.srt").read_text() == "kept\n"
    assert "two nine six six two" in (out / "a.srt").read_text()


@pytest.mark.parametrize("args, message", [
    (["--skip-existing"], "--skip-existing needs --output-dir"),
    (["--output-dir", "OUT", "--batch-seconds", "0"], "batch size must be a positive"),
    (["--output-dir", "OUT", "--workers", "0"], "at least one worker"),
    (["--output-dir", "OUT", "--batch-seconds", "nan"], "batch size must be a positive"),
    (["--output-dir", "OUT", "--batch-seconds", "inf"], "batch size must be a positive"),
])
@pytest.mark.slow
def test_bad_options_are_one_line_errors(tree, tmp_path, args, message):
    args = [str(tmp_path / "out") if arg == "OUT" else arg for arg in args]
    result = run_cli("transcribe", tree, *args, "--decoder", "greedy")
    assert result.returncode == 2
    assert error_lines(result.stderr) == result.stderr.strip().splitlines()
    assert message in result.stderr


@pytest.mark.slow
def test_two_inputs_for_one_output_are_refused_before_any_work(tree, tmp_path):
    shutil.copyfile(tree / "a.flac", tmp_path / "a.wav")
    result = run_cli("transcribe", tree / "a.flac", tmp_path / "a.wav", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(tmp_path / "out" / "a.txt") in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_output_dir_that_is_a_file_is_refused_before_the_model_loads(tree, tmp_path):
    existing = tmp_path / "notes.txt"
    existing.write_text("kept\n")
    absent_model = tmp_path / "absent.pt"  # read only if the options passed
    for output_dir in (existing, existing / "transcripts"):
        result = run_cli("transcribe", tree, "--output-dir", output_dir, "--model", absent_model)
        assert_one_line_error(result, "--output-dir", output_dir)
    assert existing.read_text() == "kept\n"


@pytest.mark.slow
@pytest.mark.parametrize("format", ["srt", "vtt"])
def test_subtitles_of_several_files_are_refused_without_an_output_dir(tree, tmp_path, format):
    result = run_cli("transcribe", tree, "--format", format, "--model", tmp_path / "absent.pt")
    assert_one_line_error(result, "--output-dir", format)
    assert result.stdout == ""
