"""Audio as it arrives: the segmenter closing a segment as its pause ends, the stream API, and
``asr transcribe -`` / FIFOs / ``--stream`` / ``asr listen`` on the command line."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shlex
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile

from asr import load_model, transcribe
from asr.audio import AudioError, RawFormat, load_audio
from asr.audio_stream import AudioStream, open_stream
from asr.segment import SegmentOptions, Segmenter
from asr.stream import Stream
from asr.stream_job import SegmentWriter, run_stream, stream_job
from helpers import AN4, FSDD, REPO, assert_one_line_error, run_cli

RATE = 16_000
BIG_ENDIAN = RawFormat(byte_order="big")


def word(name: str = "3_jackson_0") -> np.ndarray:
    return load_audio(FSDD / "recordings" / f"{name}.wav")


def test_a_segment_is_given_out_as_soon_as_its_pause_has_lasted_min_pause():
    noise = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 1e-3
    speech = word()
    segmenter = Segmenter(SegmentOptions(min_pause=0.6))
    assert segmenter.accept(np.concatenate([noise, speech])) == []
    pause = np.random.default_rng(1).standard_normal(RATE).astype(np.float32) * 1e-3
    closed_at = None
    for i in range(0, len(pause), 160):  # 10 ms at a time
        if segmenter.accept(pause[i:i + 160]):
            closed_at = (i + 160) / RATE
            break
    assert closed_at is not None, "the pause never closed the segment"
    assert 0.55 <= closed_at <= 0.75, closed_at  # the pause, and at most one 0.1 s step of judging
    assert segmenter.finish() == []


# ---------------------------------------------------------------- reading a stream as it arrives

def joined_clips() -> np.ndarray:
    """Six AN4 utterances with a second of silence after each: six segments, about 16 s."""
    clips = [load_audio(path, raw=BIG_ENDIAN) for path in sorted((AN4 / "wav" / "an4_clstk").glob("*/*.raw"))[:6]]
    return np.concatenate([np.concatenate([clip, np.zeros(RATE, dtype=np.float32)]) for clip in clips])


def encoded(samples: np.ndarray, format: str, rate: int = RATE, **options) -> bytes:
    buffer = io.BytesIO()
    with soundfile.SoundFile(buffer, "w", rate, 1, format=format, **options) as sound:
        for i in range(0, len(samples), rate):  # a block at a time: libsndfile's Vorbis encoder crashes on long writes
            sound.write(samples[i:i + rate])
    return buffer.getvalue()


def piped(data: bytes, pieces: int = 7) -> int:
    """A pipe's read end that ``data`` arrives on, in a few writes from another thread."""
    read_end, write_end = os.pipe()

    def write() -> None:
        with open(write_end, "wb", buffering=0) as out:
            step = max(1, len(data) // pieces)
            for i in range(0, len(data), step):
                out.write(data[i:i + step])

    threading.Thread(target=write, daemon=True).start()
    return read_end


def read_all(fd: int, raw: RawFormat | None = None) -> tuple[int, np.ndarray, list[str]]:
    warnings: list[str] = []
    audio = open_stream(fd, "-", raw, warnings.append)
    blocks = list(audio.blocks)
    os.close(fd)
    return audio.sample_rate, np.concatenate(blocks) if blocks else np.zeros((0, 1)), warnings


@pytest.mark.parametrize("format, subtype", [("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "FLOAT"),
                                             ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_a_stream_is_read_as_the_file_holding_the_same_bytes(format, subtype, tmp_path):
    samples = np.stack([joined_clips()[:5 * RATE], joined_clips()[RATE:6 * RATE]], axis=1)  # stereo
    data = encoded(samples[:, 0], format, subtype=subtype) if format == "OGG" else None
    buffer = io.BytesIO()
    if data is None:
        soundfile.write(buffer, samples, RATE, format=format, subtype=subtype)
        data = buffer.getvalue()
    (tmp_path / "file").write_bytes(data)
    rate, streamed, warnings = read_all(piped(data))
    expected, _ = soundfile.read(tmp_path / "file", dtype="float32", always_2d=True)
    assert rate == RATE and warnings == []
    np.testing.assert_allclose(streamed, expected, atol=1e-6)


@pytest.mark.parametrize("size", [0, 0xFFFFFFFF])
def test_a_wav_stream_whose_writer_could_not_seek_back_is_read_to_its_end(size):
    buffer = io.BytesIO()
    samples = joined_clips()[:3 * RATE]
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    data[4:8] = data[40:44] = size.to_bytes(4, "little")  # RIFF size, data size
    rate, streamed, warnings = read_all(piped(bytes(data)))
    assert warnings == []
    np.testing.assert_allclose(streamed[:, 0], samples, atol=1 / 32768)


def test_headerless_pcm_needs_its_layout_and_is_read_in_it():
    samples = (joined_clips()[:2 * RATE] * 20000).astype(">i2")
    layout = RawFormat(sample_rate=RATE, byte_order="big")
    rate, streamed, _ = read_all(piped(samples.tobytes()), layout)
    np.testing.assert_allclose(streamed[:, 0], samples.astype(np.float32) / 32768, atol=1e-7)
    with pytest.raises(AudioError, match="not audio .*--raw-sample-rate"):
        open_stream(piped(samples.tobytes()), "-", None)


def test_a_stream_broken_off_is_read_up_to_where_it_ended_with_a_warning():
    buffer = io.BytesIO()
    samples = joined_clips()[:RATE]
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    _, streamed, warnings = read_all(piped(data[:44 + 2 * 1000 + 1]))  # mid-sample
    assert len(streamed) == 1000 and len(warnings) == 1 and "mid-sample" in warnings[0]
    _, streamed, warnings = read_all(piped(data[:30]))  # mid-header
    assert len(streamed) == 0 and len(warnings) == 1 and "header" in warnings[0]
    flac = encoded(joined_clips()[:4 * RATE], "FLAC")
    _, streamed, warnings = read_all(piped(flac[:len(flac) // 2]))
    assert 0 < len(streamed) < 4 * RATE and len(warnings) == 1


# ---------------------------------------------------------------- the stream API


@pytest.fixture(scope="module")
def recognizer():
    return load_model(device="cpu")


@pytest.mark.parametrize("kind", ["greedy", "beam"])
def test_a_stream_transcribes_as_the_same_audio_read_whole(recognizer, kind):
    audio = joined_clips()
    decoder = recognizer.decoder(kind)
    try:
        whole = transcribe(recognizer, audio, RATE, decoder)
        stream = recognizer.stream(sample_rate=RATE, decoder=decoder)
        segments = [segment for i in range(0, len(audio), 1234) for segment in stream.accept(audio[i:i + 1234])]
        segments += stream.finish()
    finally:
        decoder.close()
    assert len(segments) >= 5
    assert " ".join(segment.text for segment in segments if segment.text) == whole.text
    assert [word for segment in segments for word in segment.words] == whole.words
    assert all(a.end <= b.start for a, b in zip(segments, segments[1:]))


def test_segments_come_out_while_the_stream_runs_and_one_never_pausing_is_cut_at_the_cap(recognizer):
    audio = joined_clips()
    stream = recognizer.stream(RATE, recognizer.decoder("greedy"))
    seen_at = []
    for i in range(0, len(audio), 1600):
        seen_at += [((i + 1600) / RATE, segment) for segment in stream.accept(audio[i:i + 1600])]
    assert len(seen_at) >= 4  # before the stream's end
    for when, segment in seen_at:
        assert when - segment.words[-1].end <= 0.6 + 0.5 + 0.1  # the pause, its trailing half, a step
    stream.finish()
    speech = audio[audio != 0]  # the silences between the utterances taken out, and no pause long enough to cut at
    stream = recognizer.stream(RATE, recognizer.decoder("greedy"), SegmentOptions(max_seconds=3.0, min_pause=5.0))
    segments = stream.accept(speech) + stream.finish()
    assert len(segments) >= len(speech) / RATE / 3
    assert all(segment.end - segment.start <= 3.0 for segment in segments)


def test_ctrl_c_while_listening_transcribes_what_was_heard(recognizer):
    audio = joined_clips()

    def microphone():
        for i in range(0, 3 * RATE + RATE // 2, 1600):  # the first utterance, and Ctrl-C within the next
            yield audio[i:i + 1600, None]
        raise KeyboardInterrupt

    out = io.StringIO()
    decoder = recognizer.decoder("greedy")
    run_stream(Stream(recognizer, RATE, decoder), microphone(), SegmentWriter("json", out), interruptible=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) >= 2, lines  # the one its pause closed, and the one still open at Ctrl-C
    assert set(lines[0]) == {"start", "end", "text", "words"}
    assert set(lines[0]["words"][0]) == {"word", "start", "end", "confidence"}
    assert lines[-1]["end"] <= 3.5


def test_subtitle_cues_are_numbered_across_segments(recognizer):
    audio = joined_clips()
    out = io.StringIO()
    run_stream(Stream(recognizer, RATE, recognizer.decoder("greedy")), [audio], SegmentWriter("srt", out))
    numbers = [int(line) for line in out.getvalue().splitlines() if line.isdigit()]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 5


# ---------------------------------------------------------------- on the command line


def run_piped(args: list[str], data: bytes | None = None, stdin=None, shell_tail: str = "") -> subprocess.CompletedProcess:
    """``asr ARGS`` with ``data`` on its standard input (or ``stdin`` as it), optionally piped on into ``shell_tail``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", "import cli; cli.main()", *args]
    if shell_tail:
        script = f"{shlex.join(command)} | {shell_tail}; exit ${{PIPESTATUS[0]}}"
        return subprocess.run(["bash", "-c", script], input=data, capture_output=True, cwd=REPO, env=env, timeout=300)
    return subprocess.run(command, input=data, stdin=stdin, capture_output=True, cwd=REPO, env=env, timeout=300)


@pytest.mark.slow
def test_transcribe_dash_prints_what_the_file_gives_a_segment_a_line(tmp_path):
    audio = joined_clips()
    path = tmp_path / "six.wav"
    soundfile.write(path, audio, RATE)
    whole = run_cli("transcribe", "--decoder", "greedy", path)
    assert whole.returncode == 0, whole.stderr
    streamed = run_piped(["transcribe", "--decoder", "greedy", "-"], encoded(audio, "FLAC"))
    assert streamed.returncode == 0 and streamed.stderr == b"", streamed.stderr
    lines = streamed.stdout.decode().splitlines()
    assert len(lines) >= 5 and " ".join(lines) == whole.stdout.strip()
    flagged = run_cli("transcribe", "--decoder", "greedy", "--stream", "--format", "json", path)
    assert " ".join(json.loads(line)["text"] for line in flagged.stdout.splitlines()) == whole.stdout.strip()


@pytest.mark.slow
def test_a_named_pipe_is_read_as_it_arrives(tmp_path):
    fifo = tmp_path / "audio.fifo"
    os.mkfifo(fifo)
    buffer = io.BytesIO()
    soundfile.write(buffer, joined_clips(), RATE, format="WAV", subtype="PCM_16")

    def write() -> None:
        with open(fifo, "wb") as out:
            out.write(buffer.getvalue())

    threading.Thread(target=write, daemon=True).start()
    result = run_cli("transcribe", "--decoder", "greedy", fifo)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) >= 5


@pytest.mark.slow
@pytest.mark.parametrize("data, named", [(b"this is plain text, not audio\n" * 10, "not audio"),
                                         (b"", "empty stream")])
def test_a_stream_that_is_not_audio_is_one_line_error(data, named):
    result = run_piped(["transcribe", "-"], data)
    assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(),
                                                      result.stderr.decode()), "-", named)
    assert result.stdout == b""


@pytest.mark.slow
def test_a_terminal_on_stdin_gets_a_hint_not_a_silent_wait():
    controller, terminal = os.openpty()
    try:
        result = run_piped(["transcribe", "-"], stdin=terminal)
    finally:
        os.close(controller)
        os.close(terminal)
    assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr.decode()),
                          "terminal", "asr listen")


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_quietly():
    audio = np.concatenate([joined_clips()] * 3)
    result = run_piped(["transcribe", "--decoder", "greedy", "-"], encoded(audio, "WAV", subtype="PCM_16"),
                       shell_tail="head -2")
    assert result.stdout.decode().count("\n") == 2
    assert result.stderr == b"" and result.returncode == 0


@pytest.mark.slow
def test_listen_without_the_microphone_extra_names_it():
    if importlib.util.find_spec("sounddevice") is not None:
        pytest.skip("sounddevice is installed here")
    assert_one_line_error(run_cli("listen"), "asr[mic]")


def test_a_stream_runs_the_model_on_one_thread(recognizer, capsys):
    """Two threads waiting on each other stalled segments for seconds on a busy machine (stream_job's docstring)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    audio = joined_clips()[:4 * RATE]
    stream_job(recognizer, recognizer.decoder("greedy"), AudioStream(RATE, iter([audio[:, None]])), "txt",
               SegmentOptions())
    assert torch.get_num_threads() == 1
    assert capsys.readouterr().out.strip()


@pytest.mark.slow
@pytest.mark.parametrize("args, named", [(["-", "other.wav"], "2 inputs"), (["-", "--output-dir", "out"], "--output-dir"),
                                         (["-", "--pause", "0"], "pause")])
def test_what_a_stream_cannot_do_is_refused_before_it_is_read(args, named):
    result = run_piped(["transcribe", *args], b"RIFF")
    assert_one_line_error(subprocess.CompletedProcess(result.args, result.returncode, "", result.stderr.decode()), named)
