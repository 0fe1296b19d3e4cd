"""``asr transcribe -`` (a pipe, a named pipe, or ``--stream`` on a file) and ``asr listen``: audio fed
to a :class:`asr.stream.Stream` as it arrives, each segment printed and flushed the moment it is decoded."""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from asr.audio import RAW_SUFFIXES, SAMPLE_RATE, RawFormat, stream_audio
from asr.audio_stream import BLOCK_SECONDS, AudioStream, open_stream
from asr.decoding import Decoder
from asr.errors import AsrError
from asr.segment import SegmentOptions
from asr.stream import Stream, StreamSegment
from asr.subtitles import VTT_HEADER, group_cues, srt_cue, vtt_cue
from asr.transcribe import Recognizer

MIC_EXTRA = "asr[mic]"


class StreamJobError(AsrError):
    pass


def is_stream(path: Path) -> bool:
    """Whether an input is read as it arrives: ``-`` (standard input) or a named pipe."""
    return str(path) == "-" or (path.exists() and stat.S_ISFIFO(path.stat().st_mode))


def check_stream_options(inputs: list[Path], output_dir: Path | None, skip_existing: bool) -> None:
    """Refuse what a transcript printed as it happens cannot do, before anything is read."""
    if len(inputs) != 1:
        raise StreamJobError(f"{len(inputs)} inputs: a stream (-, a named pipe or --stream) is transcribed on its own")
    if output_dir is not None or skip_existing:
        raise StreamJobError(f"{inputs[0]}: a stream's transcript is printed as it happens; "
                             "--output-dir and --skip-existing do not apply (redirect it to a file)")


def open_input(path: Path, raw: RawFormat | None) -> AudioStream:
    """The audio an input gives as it arrives: standard input, a named pipe, or a file read as if it were
    one. Headerless PCM on a pipe needs its layout in ``raw``; a .raw/.pcm file without it is 16 kHz 16-bit mono."""
    if str(path) == "-":
        if os.isatty(sys.stdin.fileno()):
            raise StreamJobError("-: standard input is a terminal; pipe audio into it "
                                 "(ffmpeg -i talk.mp4 -f wav - | asr transcribe -), or use asr listen for the microphone")
        return open_stream(sys.stdin.fileno(), "-", raw, warn)
    if is_stream(path):
        return open_stream(os.open(path, os.O_RDONLY), str(path), raw, warn)
    layout = (raw or RawFormat()) if path.suffix.lower() in RAW_SUFFIXES else None
    blocks = stream_audio(path, SAMPLE_RATE, layout, BLOCK_SECONDS)
    return AudioStream(SAMPLE_RATE, (block[:, None] for block in blocks))


def stream_job(recognizer: Recognizer, decoder: Decoder, audio: AudioStream, format: str,
               segmenting: SegmentOptions, interruptible: bool = False) -> None:
    """Transcribe ``audio`` as it arrives, printing each segment in ``format`` as soon as it is decoded."""
    _one_model_thread()
    stream = Stream(recognizer, audio.sample_rate, decoder, segmenting)
    run_stream(stream, audio.blocks, SegmentWriter(format, sys.stdout), interruptible)


def _one_model_thread() -> None:
    """Run torch on one thread: a stream decodes one short segment at a time, where a second thread
    saves little, and on a busy machine torch's threads waiting on each other stalled a segment for
    seconds (2-core Xeon under load 4-5, benchmarks/stream_latency.py: 95th percentile of the latency
    9.3 s with the default threads, 0.75 s with one). Nothing to do for a model that runs without torch."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


@dataclass
class SegmentWriter:
    """Writes each segment as it comes, in a transcript format, and flushes it: txt one line a segment,
    json one object a line, srt/vtt its cues."""

    format: str
    out: TextIO
    cues: int = 0  # subtitle cues written so far

    def begin(self) -> None:
        if self.format == "vtt":
            self._write(VTT_HEADER)

    def write(self, segments: Iterable[StreamSegment]) -> None:
        for segment in segments:
            if segment.words:
                self._write(self._text(segment))

    def _text(self, segment: StreamSegment) -> str:
        if self.format == "json":
            return json.dumps({"start": segment.start, "end": segment.end, "text": segment.text,
                               "words": [dataclasses.asdict(word) for word in segment.words]}) + "\n"
        if self.format in ("srt", "vtt"):
            cues = group_cues(segment.words)
            numbers = range(self.cues + 1, self.cues + len(cues) + 1)
            self.cues += len(cues)
            return "".join(srt_cue(number, cue) if self.format == "srt" else vtt_cue(cue)
                           for number, cue in zip(numbers, cues))
        return segment.text + "\n"

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


def run_stream(stream: Stream, blocks: Iterable[np.ndarray], writer: SegmentWriter, interruptible: bool = False
               ) -> None:
    """Feed ``blocks`` to ``stream``, writing segments as they are decoded, then what is left when the
    blocks end (or, ``interruptible``, on Ctrl-C). A reader that closes its end (``| head -3``) ends it quietly."""
    try:
        writer.begin()
        try:
            for block in blocks:
                writer.write(stream.accept(block))
        except KeyboardInterrupt:
            if not interruptible:
                raise
        writer.write(stream.finish())
    except BrokenPipeError:
        stream.decoder.close()
        _quiet_stdout()


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail on the closed pipe again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def open_microphone(device: str | None, sample_rate: int = SAMPLE_RATE) -> AudioStream:
    """An input device (the default one without ``device``: its number, or a part of its name) as it records."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:  # OSError: the module is there but PortAudio is not
        raise StreamJobError(f"asr listen needs the microphone extra: pip install '{MIC_EXTRA}' "
                             f"({type(error).__name__}: {error})") from None
    chosen: int | str | None = int(device) if device is not None and device.isdigit() else device
    blocks: queue.Queue = queue.Queue()
    try:
        recording = sounddevice.InputStream(samplerate=sample_rate, channels=1, dtype="float32", device=chosen,
                                            blocksize=int(BLOCK_SECONDS * sample_rate),
                                            callback=lambda data, frames, time, status: blocks.put(data.copy()))
    except (sounddevice.PortAudioError, ValueError) as error:
        raise StreamJobError(f"--device {device or 'default'}: cannot record from it ({error})") from None

    def recorded() -> Iterator[np.ndarray]:
        with recording:
            while True:
                yield blocks.get()

    return AudioStream(sample_rate, recorded())
