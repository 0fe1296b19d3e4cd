"""Transcribing audio: read it in blocks, cut it at pauses, run the model on batches of segments,
decode them, and stitch the words back into one transcript per file in the file's own time.

Files and segments are batched together regardless of which file they came from, so a
folder of short clips fills the model's batches as well as one long recording does.
Reading and cutting run in background threads, a few files ahead of the model, with
a bounded queue each: memory stays bounded however long the files are.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import functools
import glob
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr.audio import RAW_SUFFIXES, AudioError, RawFormat, audio_duration, mono_stream, samples_first, stream_audio
from asr.checkpoint import Recognizer
from asr.data import quiet_unless, write_text_atomically
from asr.decoding import Decoder, Word, quiet_c_stderr, split_batch
from asr.errors import AsrError
from asr.segment import Segment, SegmentOptions, segment_stream
from asr.subtitles import to_srt, to_vtt

FORMATS = ("txt", "json", "srt", "vtt")
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aif", ".aiff",
                            ".aifc", ".au", ".snd", ".w64", ".caf", ".raw", ".pcm"})
SORT_WINDOW = 4  # batches' worth of segments sorted by length together, so that batches pad less
QUEUE_SEGMENTS = 8  # segments a reader thread may hold ready for the model, per file
MMAP_THRESHOLD = 128 * 1024  # glibc's initial M_MMAP_THRESHOLD, held there


class TranscribeError(AsrError):
    pass


@dataclass
class Transcript:
    path: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None  # the one-line reason when the file could not be transcribed


@dataclass
class AudioFile:
    """A file to transcribe; ``root`` is the folder it was found in, whose layout the outputs mirror."""

    path: Path
    root: Path | None = None


@dataclass
class _Source:
    name: str  # the path, or "" for audio handed over in memory
    open: Callable[[], Iterable[np.ndarray]]  # mono float32 blocks at the model's sample rate


@dataclass
class _Read:
    samples: int  # the end of a file that was read through


@dataclass
class _InFlight:
    """A file being transcribed: its decoded parts, and how much of it is still to come."""

    transcript: Transcript
    parts: list[tuple[int, list[Word]]] = field(default_factory=list)  # (first sample, words) per segment
    undecoded: int = 0  # segments handed to the model and not yet decoded
    read: bool = False
    counted: int = 0  # samples of it reported to the progress callback

    def finished(self) -> Transcript:
        if self.transcript.error is None:
            self.transcript.words = [word for _, words in sorted(self.parts, key=lambda part: part[0]) for word in words]
            self.transcript.text = " ".join(word.word for word in self.transcript.words)
        return self.transcript


def transcribe(recognizer: Recognizer, audio: str | os.PathLike | np.ndarray | torch.Tensor,
               sample_rate: int | None = None, decoder: Decoder | None = None,
               segmenting: SegmentOptions = SegmentOptions(), batch_seconds: float = 60.0) -> Transcript:
    """Transcribe one recording: a file's path, or samples with their ``sample_rate``.

    A numpy array or tensor is (samples,), or (samples, channels) as soundfile reads them, or
    (channels, samples) as librosa and torchaudio do: the longer axis is time, and an array
    whose layout that cannot tell is refused. Integer samples are scaled to [-1, 1]. Pass a
    ``decoder`` to reuse one (and its LM) across calls; otherwise the model's default is built
    and closed here. Raises an AsrError when the audio cannot be used.
    """
    model_rate = recognizer.frontend.config.sample_rate
    if isinstance(audio, (str, os.PathLike)):
        source = _Source(str(audio), lambda: stream_audio(audio, model_rate))
    else:
        if sample_rate is None:
            raise AudioError("audio: samples need their sample rate (sample_rate=...)")
        array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        samples = samples_first(_as_float(array))
        source = _Source("", lambda: mono_stream([samples], sample_rate, model_rate))
    own_decoder = decoder is None
    decoder = decoder or recognizer.decoder()
    try:
        (transcript,) = _transcribe(recognizer, decoder, [source], batch_seconds, segmenting, workers=1)
    finally:
        if own_decoder:
            decoder.close()
    if transcript.error is not None:
        raise AudioError(transcript.error)
    return transcript


def transcribe_files(recognizer: Recognizer, paths: Iterable[str | os.PathLike], decoder: Decoder | None = None,
                     batch_seconds: float = 60.0, raw: RawFormat | None = None,
                     segmenting: SegmentOptions = SegmentOptions(), workers: int = 1,
                     progress: Callable[[float], None] | None = None) -> Iterator[Transcript]:
    """One transcript per path, in order, each as soon as it is done; a file that fails carries its
    one-line error instead.

    Segments of all files go through the model in batches of about ``batch_seconds`` of
    audio; ``workers`` threads read and cut files ahead of it; ``.raw``/``.pcm`` files are
    read in the layout ``raw`` gives. ``progress`` is called with the seconds of audio
    done each time some are.
    """
    model_rate = recognizer.frontend.config.sample_rate

    def source(path: str | os.PathLike) -> _Source:
        layout = raw if Path(path).suffix.lower() in RAW_SUFFIXES else None
        return _Source(str(path), lambda: stream_audio(path, model_rate, layout))

    yield from _transcribe(recognizer, decoder or recognizer.decoder(), map(source, paths), batch_seconds,
                           segmenting, workers, progress)


def _transcribe(recognizer: Recognizer, decoder: Decoder, sources: Iterable[_Source], batch_seconds: float,
                segmenting: SegmentOptions, workers: int, progress: Callable[[float], None] | None = None
                ) -> Iterator[Transcript]:
    if batch_seconds <= 0:
        raise TranscribeError(f"the batch size must be a positive number of seconds, not {batch_seconds:g}")
    if workers < 1:
        raise TranscribeError(f"at least one worker is needed, not {workers}")
    segmenting.validate()
    _hold_mmap_threshold()
    sample_rate = recognizer.frontend.config.sample_rate
    in_flight: deque[_InFlight] = deque()
    window: list[tuple[_InFlight, Segment]] = []
    window_samples = 0

    def complete() -> Iterator[Transcript]:
        """The files at the front of the queue that are complete, in order."""
        while in_flight and in_flight[0].read and not in_flight[0].undecoded:
            file = in_flight.popleft()
            _count(file, round(file.transcript.duration * sample_rate), progress, sample_rate)
            yield file.finished()

    def decode_window() -> Iterator[Transcript]:
        nonlocal window_samples
        _decode(recognizer, decoder, window, batch_seconds)
        for file, segment in window:
            _count(file, segment.end, progress, sample_rate)
        window.clear()
        window_samples = 0
        yield from complete()

    with contextlib.closing(_read_ahead(sources, segmenting, sample_rate, workers)) as files:
        for name, items in files:
            file = _InFlight(Transcript(name))
            in_flight.append(file)
            for item in items:
                if isinstance(item, Segment):
                    window.append((file, item))
                    file.undecoded += 1
                    window_samples += len(item.samples)
                    if window_samples >= SORT_WINDOW * batch_seconds * sample_rate:
                        yield from decode_window()
                elif isinstance(item, _Read):
                    file.transcript.duration = item.samples / sample_rate
                else:
                    file.transcript.error = str(item)
            file.read = True
            yield from complete()
        yield from decode_window()


@functools.cache
def _hold_mmap_threshold() -> None:
    """Keep glibc from raising its mmap threshold as large buffers are freed.

    By default glibc serves an allocation above the threshold with its own mmap, but each
    such block freed raises the threshold to its size (up to 32 MB); from then on batches'
    tensors of every padded length come from the heap, which fragments, and a process
    transcribing an hour grows by a tenth over one transcribing ten minutes. Setting the
    threshold explicitly switches that adjustment off (``mallopt(3)``, as the environment
    variable MALLOC_MMAP_THRESHOLD_ does). Elsewhere than glibc, nothing to do.
    """
    library = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(library), "mallopt", None) if library else None
    if mallopt is not None:
        mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD


def _count(file: _InFlight, upto: int, progress: Callable[[float], None] | None, sample_rate: int) -> None:
    if progress is not None and upto > file.counted:
        progress((upto - file.counted) / sample_rate)
        file.counted = upto


def _decode(recognizer: Recognizer, decoder: Decoder, window: list[tuple[_InFlight, Segment]],
            batch_seconds: float) -> None:
    """Run the window's segments through the model, longest first in batches of at most about
    ``batch_seconds`` of padded audio, decode them together, and file each one's words under its file."""
    if not window:
        return
    sample_rate = recognizer.frontend.config.sample_rate
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(window)
    for batch in _batches([len(segment.samples) for _, segment in window], batch_seconds * sample_rate):
        waveforms = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(window[i][1].samples) for i in batch],
                                                    batch_first=True)
        lengths = torch.tensor([len(window[i][1].samples) for i in batch])
        for i, array in zip(batch, split_batch(*recognizer.log_probs(waveforms, lengths))):
            log_probs[i] = array
    for (file, segment), hypothesis in zip(window, decoder.decode(log_probs)):
        offset = segment.start / sample_rate
        file.parts.append((segment.start, [dataclasses.replace(word, start=round(word.start + offset, 3),
                                                               end=round(word.end + offset, 3))
                                           for word in hypothesis.words]))
        file.undecoded -= 1


def _batches(lengths: Sequence[int], budget: float) -> Iterator[list[int]]:
    """Indices grouped longest first, each group's padded size (longest times count) within ``budget``."""
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if batch and lengths[batch[0]] * (len(batch) + 1) > budget:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _read_ahead(sources: Iterable[_Source], segmenting: SegmentOptions, sample_rate: int, workers: int
                ) -> Iterator[tuple[str, Iterator[Segment | _Read | AsrError]]]:
    """Each source's name and what reading it gives, in order: its segments, then its end or its error.

    ``workers`` threads read up to ``workers`` files ahead; each file's queue holds a few
    segments, so a reader waits for the model rather than filling memory.
    """
    stop = threading.Event()
    started: deque[tuple[str, queue.Queue]] = deque()
    pending = iter(sources)
    with ThreadPoolExecutor(workers, thread_name_prefix="asr-read") as pool:

        def start_next() -> None:
            for source in pending:
                items: queue.Queue = queue.Queue(QUEUE_SEGMENTS)
                pool.submit(_read, source, segmenting, sample_rate, items, stop)
                started.append((source.name, items))
                return

        def drain(items: queue.Queue) -> Iterator[Segment | _Read | AsrError]:
            while not isinstance(item := items.get(), (_Read, AsrError)):
                yield item
            yield item

        try:
            for _ in range(workers):
                start_next()
            while started:
                name, items = started.popleft()
                start_next()
                yield name, drain(items)
        finally:
            stop.set()


def _read(source: _Source, segmenting: SegmentOptions, sample_rate: int, items: queue.Queue,
          stop: threading.Event) -> None:
    """Read and cut one source into ``items`` (a reader thread's job); never raises."""
    samples = 0

    def counted(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        nonlocal samples
        for block in blocks:
            samples += len(block)
            yield block

    try:
        for segment in segment_stream(counted(source.open()), segmenting, sample_rate):
            if not _put(items, segment, stop):
                return
        end: _Read | AsrError = _Read(samples)
    except AsrError as error:
        end = error
    except Exception as error:  # whatever a damaged file makes a decoder raise, it is that file's problem alone
        end = AudioError(f"{source.name or 'audio'}: cannot be read ({type(error).__name__}: "
                         f"{str(error).strip().splitlines()[0] if str(error).strip() else 'no reason given'})")
    _put(items, end, stop)


def _put(items: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Queue ``item`` unless the job stops (or the program ends) first; whether it was queued."""
    while not stop.is_set() and threading.main_thread().is_alive():
        try:
            items.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _as_float(samples: np.ndarray) -> np.ndarray:
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        return ((samples.astype(np.float32) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2))
    return samples.astype(np.float32, copy=False)


# ---------------------------------------------------------------- batch jobs: folders in, files out


def find_audio(inputs: Sequence[str | os.PathLike]) -> tuple[list[AudioFile], list[str]]:
    """The files that files, folders (searched recursively) and glob patterns name, and a one-line
    problem for each folder or pattern that names none. A path that does not exist is kept, to be
    reported when it is read; hidden files and folders are skipped; a file named twice is kept once."""
    found: list[AudioFile] = []
    problems: list[str] = []
    for given in map(str, inputs):
        matches = [given] if os.path.lexists(given) or not glob.has_magic(given) else sorted(glob.glob(given, recursive=True))
        if not matches:
            problems.append(f"{given}: no files match this pattern")
        for match in map(Path, matches):
            if match.is_dir():
                inside = [AudioFile(path, match) for path in _walk(match)]
                if not inside:
                    problems.append(f"{match}: no audio files in this folder")
                found.extend(inside)
            else:
                found.append(AudioFile(match))
    unique = {os.path.realpath(file.path): file for file in reversed(found)}
    return [file for file in found if unique[os.path.realpath(file.path)] is file], problems


def _walk(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def format_transcript(transcript: Transcript, format: str) -> str:
    """The transcript as its output file's text: txt, json (with word timings), srt or vtt."""
    if format == "json":
        return json.dumps({"path": transcript.path, "text": transcript.text, "duration": round(transcript.duration, 3),
                           "words": [dataclasses.asdict(word) for word in transcript.words]}) + "\n"
    if format == "srt":
        return to_srt(transcript.words)
    if format == "vtt":
        return to_vtt(transcript.words)
    return transcript.text + "\n"


def output_path(transcript: Transcript, output_dir: Path, format: str, root: Path | None = None) -> Path:
    """Where a transcript is written: beside the others, or where the file sits under ``root``, if it was found in one."""
    path = Path(transcript.path)
    return output_dir / (path.relative_to(root) if root is not None else Path(path.name)).with_suffix(f".{format}")


@dataclass
class JobSummary:
    transcribed: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0  # wall-clock time of the job

    def __str__(self) -> str:
        rate = f", real-time factor {self.seconds / self.audio_seconds:.4f}" if self.audio_seconds else ""
        return (f"{self.transcribed} transcribed, {self.failed} failed, {self.skipped} skipped: "
                f"{self.audio_seconds / 3600:.2f} h of audio in {self.seconds:.1f} s{rate}")


def transcribe_job(recognizer: Recognizer, decoder: Decoder, inputs: Sequence[str | os.PathLike], format: str = "txt",
                   output_dir: Path | None = None, skip_existing: bool = False, batch_seconds: float = 60.0,
                   raw: RawFormat | None = None, workers: int = 2, progress: bool = False) -> JobSummary:
    """``asr transcribe``: transcribe files, folders and patterns, writing each transcript as soon as it
    is done (atomically, into ``output_dir``) or printing it; a file that fails is one ``error:`` line
    on stderr and the rest go on. With ``progress``, a progress bar; with it or ``output_dir``, a closing
    summary line on stderr (printed transcripts alone on a pipe stay clean)."""
    started = time.perf_counter()
    files, problems = find_audio(inputs)
    summary = JobSummary(failed=len(problems))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if skip_existing and output_dir is None:
        raise TranscribeError("--skip-existing needs --output-dir, where the finished transcripts are")
    outputs = {}
    if output_dir is not None:
        outputs = {str(file.path): output_path(Transcript(str(file.path)), output_dir, format, file.root) for file in files}
        _check_distinct(outputs)
        if skip_existing:
            files = [file for file in files if not outputs[str(file.path)].exists()]
            summary.skipped = len(outputs) - len(files)
    total = sum(_duration_or_zero(file.path, raw) for file in files) / 3600 if progress else None
    with quiet_c_stderr(), tqdm(total=total, unit="h", desc="transcribing", bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h "
              "[{elapsed}<{remaining}{postfix}]", **quiet_unless(progress)) as bar:

        done = 0.0

        def advance(seconds: float) -> None:
            nonlocal done
            done += seconds
            bar.update(seconds / 3600)
            bar.set_postfix_str(f"real-time factor {(time.perf_counter() - started) / done:.3f}", refresh=False)

        results = transcribe_files(recognizer, [file.path for file in files], decoder, batch_seconds, raw,
                                   workers=workers, progress=advance)
        with contextlib.closing(results):
            for result in results:
                if result.error is not None:
                    summary.failed += 1
                    tqdm.write(f"error: {result.error}", file=sys.stderr)
                    continue
                summary.transcribed += 1
                summary.audio_seconds += result.duration
                if output_dir is not None:
                    target = outputs[result.path]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomically(target, format_transcript(result, format))
                elif format == "txt" and len(files) > 1:
                    tqdm.write(f"{result.path}\t{result.text}", file=sys.stdout)
                else:
                    tqdm.write(format_transcript(result, format), file=sys.stdout, end="")
    summary.seconds = time.perf_counter() - started
    if progress or output_dir is not None:
        print(summary, file=sys.stderr)
    return summary


def _check_distinct(outputs: dict[str, Path]) -> None:
    writers: dict[Path, str] = {}
    for path, target in outputs.items():
        if target in writers:
            raise TranscribeError(f"{writers[target]} and {path} would both be written to {target}; "
                                  "rename one or transcribe them into different --output-dir folders")
        writers[target] = path


def _duration_or_zero(path: Path, raw: RawFormat | None) -> float:
    try:
        return audio_duration(path, raw if path.suffix.lower() in RAW_SUFFIXES else None)
    except AsrError:
        return 0.0
