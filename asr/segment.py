"""Cutting a recording into segments at pauses, so that the model never sees more than a bounded stretch.

A bidirectional LSTM reads a whole input before it says anything, so an hour of audio
cannot go through it in one piece; and this one, trained on single short utterances,
does best on one utterance at a time. An energy detector finds the pauses: a 10 ms
frame is speech when it is ``threshold_db`` (at most half the dynamic range) louder
than the noise floor, the 10th percentile of the frame energies within 15 s either side,
digital silence left out. A pause of at least ``min_pause`` ends a segment: up to
``padding`` of it stays with the speech on either side, as the silence around a
training utterance does, and the rest is dropped. A segment that reaches
``max_seconds`` without such a pause is cut at its quietest moment in its second half.
Segments never overlap, so no word is heard twice, and they are cut only where the
audio is quiet, so words are rarely split.

The detector reads a stream of blocks and holds at most about ``max_seconds`` plus
16 s of audio; its decisions do not depend on how the stream is blocked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from asr.audio import SAMPLE_RATE
from asr.errors import AsrError

FRAME_SECONDS = 0.01
CHUNK_FRAMES = 100  # the noise floor is estimated once per second of audio ...
FLOOR_CONTEXT_CHUNKS = 15  # ... from the 15 s before and after that second
FLOOR_PERCENTILE = 10
LOUD_PERCENTILE = 90
MIN_THRESHOLD_DB = 6.0
SILENT_DB = -100.0  # the energy of digital silence
DIGITAL_SILENCE_DB = -90.0  # frames below this (zeros, or dither at most) say nothing about the noise floor


class SegmentError(AsrError):
    pass


@dataclass(frozen=True)
class SegmentOptions:
    max_seconds: float = 20.0  # no segment is longer
    min_pause: float = 0.6  # a pause at least this long (seconds) ends a segment; shorter ones stay inside
    padding: float = 0.5  # at most this much of a pause is kept before and after the speech beside it
    threshold_db: float = 18.0  # how much louder than the noise floor speech is (at most half the dynamic range)

    def validate(self) -> None:
        if self.max_seconds < 1:
            raise SegmentError(f"the maximum segment length must be at least 1 s, not {self.max_seconds:g}")
        if self.min_pause <= 0 or self.padding < 0:
            raise SegmentError(f"the pause ({self.min_pause:g} s) must be positive and the padding ({self.padding:g} s) "
                               "not negative")
        if self.threshold_db <= 0:
            raise SegmentError(f"the speech threshold must be positive, not {self.threshold_db:g} dB")


@dataclass
class Segment:
    start: int  # the index of its first sample in the recording
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def segment_stream(blocks: Iterable[np.ndarray], options: SegmentOptions = SegmentOptions(),
                   sample_rate: int = SAMPLE_RATE) -> Iterator[Segment]:
    """The segments of speech in consecutive blocks of mono samples, in order (none for silence)."""
    options.validate()
    frame = round(sample_rate * FRAME_SECONDS)
    chunks = _rechunk(blocks, frame * CHUNK_FRAMES)
    yield from _cut(_classified(chunks, frame, options.threshold_db), options, frame)


def frame_energies(samples: np.ndarray, frame: int) -> np.ndarray:
    """Energy in dB of each frame of ``frame`` samples (the last one maybe shorter), DC removed."""
    whole = len(samples) // frame * frame
    variances = samples[:whole].reshape(-1, frame).var(axis=1)
    if whole < len(samples):
        variances = np.append(variances, samples[whole:].var())
    return 10 * np.log10(variances.astype(np.float64) + 10 ** (SILENT_DB / 10))


def _rechunk(blocks: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The stream in chunks of exactly ``size`` samples (the last one maybe shorter), however it was blocked."""
    buffer = np.zeros(0, dtype=np.float32)
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        whole = len(buffer) // size
        if whole:
            yield from np.split(buffer[:whole * size], whole)
            buffer = buffer[whole * size:]
    if len(buffer):
        yield buffer


def _classified(chunks: Iterable[np.ndarray], frame: int, threshold_db: float
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(samples, frame energies, speech or not per frame) of each chunk, once the chunks after it are read."""
    context: deque[np.ndarray] = deque(maxlen=2 * FLOOR_CONTEXT_CHUNKS + 1)
    waiting: deque[tuple[np.ndarray, np.ndarray]] = deque()

    def classify(samples: np.ndarray, energies: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        energies_around = np.concatenate(context)
        sounding = energies_around[energies_around > DIGITAL_SILENCE_DB]  # a gap of zeros is no noise floor
        floor, loud = np.percentile(sounding if len(sounding) else energies_around, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
        margin = min(threshold_db, max(MIN_THRESHOLD_DB, (loud - floor) / 2))
        return samples, energies, energies > floor + margin

    for samples in chunks:
        energies = frame_energies(samples, frame)
        context.append(energies)
        waiting.append((samples, energies))
        if len(waiting) > FLOOR_CONTEXT_CHUNKS:
            yield classify(*waiting.popleft())
    while waiting:
        yield classify(*waiting.popleft())


@dataclass
class _Held:
    """Frames read but not yet given out or dropped: their samples and energies."""

    first: int  # frame index of samples[0]
    samples: list[np.ndarray]
    energies: list[np.ndarray]

    def slice(self, start: int, end: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
        samples = np.concatenate(self.samples)[(start - self.first) * frame:(end - self.first) * frame]
        return samples, np.concatenate(self.energies)[start - self.first:end - self.first]

    def drop_before(self, start: int) -> None:
        while self.samples and self.first + len(self.energies[0]) <= start:
            self.first += len(self.energies.pop(0))
            self.samples.pop(0)


def _cut(classified: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], options: SegmentOptions, frame: int
         ) -> Iterator[Segment]:
    min_pause, padding = round(options.min_pause / FRAME_SECONDS), round(options.padding / FRAME_SECONDS)
    max_frames = round(options.max_seconds / FRAME_SECONDS)
    held = _Held(0, [], [])
    start: int | None = None  # the first frame of the open segment, if one is open
    pause: int | None = 0  # the first frame of the current run of non-speech (the stream begins in one)
    last_end = 0  # the frame after the last segment given out
    t = 0

    def segment(begin: int, end: int) -> Segment:  # a copy, not a view that would keep all held audio alive
        return Segment(begin * frame, held.slice(begin, end, frame)[0].copy())

    for samples, energies, speech in classified:
        held.samples.append(samples)
        held.energies.append(energies)
        for is_speech in speech.tolist():
            if is_speech:
                if pause is not None and t - pause >= min_pause:
                    if start is not None:
                        last_end = pause + min(padding, (t - pause) // 2)
                        yield segment(start, last_end)
                    start = max(last_end, t - padding)
                elif start is None:
                    start = last_end
                pause = None
            elif pause is None:
                pause = t
            if start is not None and t + 1 - start >= max_frames:
                if pause is not None:  # in a pause: end the segment there, and let the pause decide what follows
                    last_end = min(t + 1, pause + padding)
                else:
                    quiet_from = start + max_frames // 2
                    loudness = np.convolve(held.slice(quiet_from, t + 1, frame)[1], np.ones(5) / 5, mode="same")
                    last_end = quiet_from + int(np.argmin(loudness))
                yield segment(start, last_end)
                start = None if pause is not None else last_end
            t += 1
        if start is not None:
            held.drop_before(start)
        else:
            held.drop_before(max(last_end, t - padding) if t - pause >= min_pause else last_end)
    if start is not None:
        end = pause + padding if pause is not None and t - pause >= min_pause else t
        yield segment(start, min(end, t))
