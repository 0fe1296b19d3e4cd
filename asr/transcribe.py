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
import math
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from asr.audio import RAW_SUFFIXES, AudioError, RawFormat, mono_stream, samples_first, stream_audio
from asr.decoding import Decoder, Word, split_batch
from asr.errors import AsrError
from asr.segment import Segment, SegmentOptions, segment_stream
from asr.text import Vocabulary

SORT_WINDOW = 4  # batches' worth of segments sorted by length together, so that batches pad less
QUEUE_SEGMENTS = 8  # segments a reader thread may hold ready for the model, per file
MMAP_THRESHOLD = 128 * 1024  # glibc's initial M_MMAP_THRESHOLD, held there


class TranscribeError(AsrError):
    pass


class Recognizer(Protocol):
    """What the engine needs of a model: ``asr.recognizer.Recognizer`` (torch) and
    ``asr.onnx_model.OnnxRecognizer`` (ONNX Runtime, no torch) both are one."""

    vocabulary: Vocabulary

    @property
    def frontend(self) -> Any: ...  # its ``config`` is the model's FeatureConfig

    @property
    def frame_seconds(self) -> float: ...

    def log_probs(self, waveforms: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def decoder(self, kind: str | None = None, lm: str | os.PathLike | None = None, alpha: float | None = None,
                beta: float | None = None, **options) -> Decoder: ...


@dataclass
class Transcript:
    path: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    duration: float = 0.0
    error: str | None = None  # the one-line reason when the file could not be transcribed


@dataclass
class _Source:
    name: str  # the path, or "" for audio handed over in memory
    open: Callable[[], Iterable[np.ndarray]]  # mono float32 blocks at the model's sample rate


@dataclass
class _FileEnd:
    samples: int  # the length of a file that was read through to its end


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


def transcribe(recognizer: Recognizer, audio: str | os.PathLike | np.ndarray,
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
        samples = samples_first(float_samples(audio))
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
    done each time some are. Without a ``decoder``, the model's default is built, and closed
    (its beam-search workers stopped) when the last transcript is out or the iteration stops.
    """
    model_rate = recognizer.frontend.config.sample_rate

    def source(path: str | os.PathLike) -> _Source:
        layout = raw if Path(path).suffix.lower() in RAW_SUFFIXES else None
        return _Source(str(path), lambda: stream_audio(path, model_rate, layout))

    own_decoder = decoder is None
    decoder = decoder or recognizer.decoder()
    try:
        yield from _transcribe(recognizer, decoder, map(source, paths), batch_seconds, segmenting, workers, progress)
    finally:
        if own_decoder:
            decoder.close()  # and with it beam search's worker processes


def _transcribe(recognizer: Recognizer, decoder: Decoder, sources: Iterable[_Source], batch_seconds: float,
                segmenting: SegmentOptions, workers: int, progress: Callable[[float], None] | None = None
                ) -> Iterator[Transcript]:
    if not 0 < batch_seconds < math.inf:  # nan and inf would make one batch of everything
        raise TranscribeError(f"the batch size must be a positive number of seconds, not {batch_seconds:g}")
    if workers < 1:
        raise TranscribeError(f"at least one worker is needed, not {workers}")
    segmenting.validate()
    hold_mmap_threshold()
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
                elif isinstance(item, _FileEnd):
                    file.transcript.duration = item.samples / sample_rate
                else:
                    file.transcript.error = str(item)
            file.read = True
            yield from complete()
        yield from decode_window()


@functools.cache
def hold_mmap_threshold() -> None:
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
    """Decode the window's segments together and file each one's words under its file."""
    if not window:
        return
    words = decode_segments(recognizer, decoder, [segment for _, segment in window], batch_seconds)
    for (file, segment), segment_words in zip(window, words):
        file.parts.append((segment.start, segment_words))
        file.undecoded -= 1


def decode_segments(recognizer: Recognizer, decoder: Decoder, segments: Sequence[Segment],
                    batch_seconds: float = 60.0) -> list[list[Word]]:
    """Each segment's words, timed from the start of its recording: the segments go through the model
    longest first in batches of at most about ``batch_seconds`` of padded audio, and are decoded together."""
    sample_rate = recognizer.frontend.config.sample_rate
    log_probs: list[np.ndarray] = [np.zeros(0)] * len(segments)
    for batch in _batches([len(segment.samples) for segment in segments], batch_seconds * sample_rate):
        lengths = np.array([len(segments[i].samples) for i in batch])
        waveforms = np.zeros((len(batch), lengths.max()), dtype=np.float32)
        for row, i in enumerate(batch):
            waveforms[row, :lengths[row]] = segments[i].samples
        for i, array in zip(batch, split_batch(*recognizer.log_probs(waveforms, lengths))):
            log_probs[i] = array
    words = []
    for segment, hypothesis in zip(segments, decoder.decode(log_probs)):
        # In recording time, and within the segment: its last frame's span reaches past its last sample.
        offset, end = segment.start / sample_rate, segment.end / sample_rate
        words.append([dataclasses.replace(word, start=round(min(word.start + offset, end), 3),
                                          end=round(min(word.end + offset, end), 3)) for word in hypothesis.words])
    return words


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
                ) -> Iterator[tuple[str, Iterator[Segment | _FileEnd | AsrError]]]:
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

        def drain(items: queue.Queue) -> Iterator[Segment | _FileEnd | AsrError]:
            while not isinstance(item := items.get(), (_FileEnd, AsrError)):
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
        end: _FileEnd | AsrError = _FileEnd(samples)
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


def float_samples(audio: Any) -> np.ndarray:
    """Samples as a float32 numpy array, integers scaled to [-1, 1]; a torch tensor (on any device) too,
    without importing torch to tell one."""
    torch = sys.modules.get("torch")
    is_tensor = torch is not None and isinstance(audio, torch.Tensor)
    samples = audio.detach().cpu().numpy() if is_tensor else np.asarray(audio)
    if np.issubdtype(samples.dtype, np.integer):
        info = np.iinfo(samples.dtype)
        return ((samples.astype(np.float32) - (info.min + info.max + 1) / 2) / ((info.max - info.min + 1) / 2))
    return samples.astype(np.float32, copy=False)
