"""Latency of `asr transcribe -`: how long after a segment's speech ends its line appears.

    python benchmarks/stream_latency.py [--minutes 3] [--decoders greedy beam] [--settings 0.6/20 0.3/20 1.0/20 0.6/10]
    python benchmarks/stream_latency.py --threads '' 1          # the command's OMP_NUM_THREADS: default, then 1
    python benchmarks/stream_latency.py --memory-minutes 10 60  # peak memory, fed as fast as it is read

Joins AN4 utterances (../shared/corpora/an4, 16 kHz raw PCM) into one recording, each
followed by 0.3 to 1.5 s of room tone (the quietest 100 ms of the clip before, repeated),
and plays it as a WAV stream into `asr transcribe - --format json` through a pipe at
real-time pace, 0.1 s at a time, after 10 s of room tone that covers the model's loading.
For each segment's line it takes (the time the line was read - the time the audio where the
last utterance in it stops speaking was written: its last 10 ms frame within 30 dB of its
loudest) and prints, per decoder and segmenter setting (closing pause
in seconds / segment cap in seconds), the median and 95th percentile of that latency, the
WER against the utterances' transcripts, and the command's peak memory (VmHWM; beam
search's worker processes not included). With --memory-minutes, the utterances are
repeated to that length and written as fast as the command reads them, and only the
peak memory and the real-time factor are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from asr.audio import SAMPLE_RATE, RawFormat, load_audio
from asr.evaluate import error_rates

REPO = Path(__file__).resolve().parent.parent
AN4 = REPO.parent / "shared" / "corpora" / "an4"
LEAD_IN_SECONDS = 10.0
CHUNK_SECONDS = 0.1
SPEECH_DB = 30.0  # a frame this far below a clip's loudest is no longer its speech


@dataclass
class Recording:
    samples: np.ndarray
    reference: str
    speech_ends: np.ndarray  # seconds: where each utterance's speech ends in the recording


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    peak_kb: int = 0
    seconds: float = 0.0


def an4_recording(minutes: float, seed: int = 0) -> Recording:
    """AN4 utterances in file order, each followed by 0.3-1.5 s of its own room tone, to ``minutes`` long
    (repeating them if need be), after LEAD_IN_SECONDS of room tone."""
    references = {}
    for line in (AN4 / "etc" / "an4_train.transcription").read_text().splitlines():
        match = re.fullmatch(r"<s> (.*) </s> \((.*)\)", line.strip())
        references[match[2]] = match[1].lower()
    paths = sorted((AN4 / "wav").rglob("*.raw"))
    rng = np.random.default_rng(seed)
    parts, words, ends, total = [], [], [], 0
    while total < minutes * 60 * SAMPLE_RATE:
        for path in paths:
            clip = load_audio(path, raw=RawFormat(byte_order="big"))
            tenths = clip[:len(clip) // 1600 * 1600].reshape(-1, 1600)
            tone = tenths[np.argmin(tenths.std(axis=1))]
            if not parts:
                parts.append(np.tile(tone, round(LEAD_IN_SECONDS / CHUNK_SECONDS)))
                total = len(parts[0])
            ends.append((total + speech_end(clip)) / SAMPLE_RATE)
            parts += [clip, np.tile(tone, 20)[:round(rng.uniform(0.3, 1.5) * SAMPLE_RATE)]]
            words.append(references[path.stem])
            total += len(clip) + len(parts[-1])
            if total >= minutes * 60 * SAMPLE_RATE:
                break
    return Recording(np.concatenate(parts), " ".join(words), np.array(ends))


def speech_end(clip: np.ndarray) -> int:
    """Where a clip's speech ends: after its last 10 ms frame within SPEECH_DB of its loudest one."""
    frames = clip[:len(clip) // 160 * 160].reshape(-1, 160)
    energies = 10 * np.log10(frames.var(axis=1) + 1e-12)
    return (int(np.flatnonzero(energies > energies.max() - SPEECH_DB)[-1]) + 1) * 160


def play(recording: Recording, args: list[str], real_time: bool, threads: str = "") -> Run:
    """Write the recording as a 16-bit WAV stream into `asr transcribe - ARGS`, and time its lines;
    ``threads``, if given, is the command's OMP_NUM_THREADS."""
    pcm = (np.clip(recording.samples, -1, 1) * 32767).astype("<i2")
    header = wav_stream_header()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **({"OMP_NUM_THREADS": threads} if threads else {})}
    process = subprocess.Popen([sys.executable, "-c", "import cli; cli.main()", "transcribe", "-", "--format", "json",
                                *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, env=env)
    chunk = round(CHUNK_SECONDS * SAMPLE_RATE)
    written_at = np.zeros(len(pcm) // chunk + 1)  # when each chunk had been written
    run = Run()

    def feed() -> None:
        process.stdin.write(header)
        started = time.perf_counter()
        for i, start in enumerate(range(0, len(pcm), chunk)):
            if real_time:
                time.sleep(max(0.0, started + i * CHUNK_SECONDS - time.perf_counter()))
            process.stdin.write(pcm[start:start + chunk].tobytes())
            process.stdin.flush()
            written_at[i] = time.perf_counter()
        process.stdin.close()

    def watch_memory() -> None:
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                run.peak_kb = max(run.peak_kb, int(re.search(r"VmHWM:\s+(\d+)", status)[1]))
            except (OSError, TypeError):
                pass
            time.sleep(0.2)

    started = time.perf_counter()
    threads = [threading.Thread(target=feed), threading.Thread(target=watch_memory)]
    for thread in threads:
        thread.start()
    for line in process.stdout:
        read_at = time.perf_counter()
        segment = json.loads(line)
        run.text.append(segment["text"])
        inside = recording.speech_ends[(recording.speech_ends > segment["start"])
                                       & (recording.speech_ends <= segment["end"])]
        if len(inside):  # a segment cut at the cap, in mid-utterance, has no utterance's end to time
            chunk_index = min(int(inside[-1] / CHUNK_SECONDS), len(written_at) - 1)
            run.latencies.append(read_at - written_at[chunk_index])
    process.wait()
    run.seconds = time.perf_counter() - started
    for thread in threads:
        thread.join()
    if process.returncode != 0:
        raise SystemExit(f"asr transcribe - {' '.join(args)} failed with status {process.returncode}")
    return run


def wav_stream_header() -> bytes:
    """The header ffmpeg and arecord write on a pipe: 16 kHz 16-bit mono, sizes unknown (0xFFFFFFFF)."""
    unknown = (0xFFFFFFFF).to_bytes(4, "little")
    fmt = (1).to_bytes(2, "little") + (1).to_bytes(2, "little") + SAMPLE_RATE.to_bytes(4, "little") \
        + (2 * SAMPLE_RATE).to_bytes(4, "little") + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
    return b"RIFF" + unknown + b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + unknown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--decoders", nargs="+", default=["greedy", "beam"])
    parser.add_argument("--settings", nargs="+", default=["0.6/20"], help="closing pause/segment cap, in seconds")
    parser.add_argument("--threads", nargs="+", default=[""],
                        help="OMP_NUM_THREADS values to run the command with ('' for the default)")
    parser.add_argument("--memory-minutes", type=float, nargs="*", default=[])
    options = parser.parse_args()
    if options.memory_minutes:
        for minutes in options.memory_minutes:
            recording = an4_recording(minutes)
            run = play(recording, ["--decoder", "greedy"], real_time=False, threads=options.threads[0])
            audio_seconds = len(recording.samples) / SAMPLE_RATE
            print(f"{minutes:g} min fed as fast as read, greedy: peak memory {run.peak_kb / 1024:.0f} MB, "
                  f"real-time factor {run.seconds / audio_seconds:.4f} (model loading included)", flush=True)
        return
    recording = an4_recording(options.minutes)
    print(f"{len(recording.samples) / SAMPLE_RATE / 60:.1f} min of AN4 at real-time pace; "
          "latency = line read - the end of its last utterance's speech written", flush=True)
    print(f"{'threads':>7} {'decoder':8} {'pause/cap':>9} {'segments':>8} {'median':>7} {'p95':>6} {'WER':>7} "
          f"{'peak MB':>8}")
    for threads in options.threads:
        for setting in options.settings:
            pause, cap = setting.split("/")
            for decoder in options.decoders:
                run = play(recording, ["--decoder", decoder, "--pause", pause, "--max-segment", cap], True, threads)
                wer = error_rates([recording.reference], [" ".join(run.text)]).wer
                p95 = float(np.percentile(run.latencies, 95))
                print(f"{threads or 'default':>7} {decoder:8} {setting:>9} {len(run.text):8d} "
                      f"{statistics.median(run.latencies):6.2f}s {p95:5.2f}s {wer:7.2%} {run.peak_kb / 1024:8.0f}",
                      flush=True)


if __name__ == "__main__":
    main()
