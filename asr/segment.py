"""Cutting audio into segments at pauses as it arrives, so that the model never sees more than a
bounded stretch and each segment can be decoded as soon as its pause has closed it.

A bidirectional LSTM reads a whole input before it says anything, so an hour of audio
cannot go through it in one piece; and this one, trained on single short utterances,
does best on one utterance at a time. An energy detector finds the pauses: a 10 ms
frame is speech when it is ``threshold_db`` (at most half the dynamic range) louder
than the noise floor, the 10th percentile of the frame energies of the 30 s before it,
digital silence left out. The floor looks only back, and is updated every 0.1 s, so that
a frame is judged 0.1 s after it arrives at most: a live stream and the same audio read
from a file are cut alike. Once a pause has lasted ``min_pause``, it closes the segment
before it: up to ``padding`` of it (and never more than ``min_pause``) stays with that
speech, up to ``padding`` before the next speech goes with it, and the rest is dropped.
A segment that reaches ``max_seconds`` without such a pause is cut at its quietest
moment in its second half. Segments never overlap, so no word is heard twice, and they
are cut only where the audio is quiet, so words are rarely split.

The segmenter holds at most about ``max_seconds`` of audio and 30 s of frame energies;
its decisions do not depend on how the stream is blocked.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from asr.audio import SAMPLE_RATE
from asr.errors import AsrError

FRAME_SECONDS = 0.01
STEP_FRAMES = 10  # frames are judged 0.1 s at a time, against a noise floor estimated ...
FLOOR_CONTEXT_STEPS = 300  # ... from the 30 s before them and themselves
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
    segmenter = Segmenter(options, sample_rate)
    for block in blocks:
        yield from segmenter.accept(block)
    yield from segmenter.finish()


def frame_energies(samples: np.ndarray, frame: int) -> np.ndarray:
    """Energy in dB of each frame of ``frame`` samples (the last one maybe shorter), DC removed."""
    whole = len(samples) // frame * frame
    variances = samples[:whole].reshape(-1, frame).var(axis=1)
    if whole < len(samples):
        variances = np.append(variances, samples[whole:].var())
    return 10 * np.log10(variances.astype(np.float64) + 10 ** (SILENT_DB / 10))


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


class Segmenter:
    """Cuts a stream pushed into it block by block: :meth:`accept` gives the segments each block
    closes, :meth:`finish` the one still open at the end."""

    def __init__(self, options: SegmentOptions = SegmentOptions(), sample_rate: int = SAMPLE_RATE):
        options.validate()
        self.frame = round(sample_rate * FRAME_SECONDS)
        self.threshold_db = options.threshold_db
        self.min_pause = round(options.min_pause / FRAME_SECONDS)
        self.padding = round(options.padding / FRAME_SECONDS)
        self.max_frames = round(options.max_seconds / FRAME_SECONDS)
        self.history: deque[np.ndarray] = deque(maxlen=FLOOR_CONTEXT_STEPS)  # frame energies of the steps before
        self.unjudged = np.zeros(0, dtype=np.float32)  # samples short of a whole step
        self.held = _Held(0, [], [])
        self.start: int | None = None  # the first frame of the open segment, if one is open
        self.pause: int | None = 0  # the first frame of the current run of non-speech (the stream begins in one)
        self.last_end = 0  # the frame after the last segment given out
        self.t = 0  # frames judged

    def accept(self, samples: np.ndarray) -> list[Segment]:
        """The segments that these samples, following those accepted before, close."""
        step = self.frame * STEP_FRAMES
        self.unjudged = np.concatenate([self.unjudged, np.asarray(samples, dtype=np.float32)])
        whole = len(self.unjudged) // step * step
        segments = [segment for i in range(0, whole, step) for segment in self._judge(self.unjudged[i:i + step])]
        self.unjudged = self.unjudged[whole:]
        return segments

    def finish(self) -> list[Segment]:
        """The segments left when the stream ends: the samples short of a step, and the open segment."""
        segments = self._judge(self.unjudged) if len(self.unjudged) else []
        self.unjudged = self.unjudged[:0]
        if self.start is not None:
            segments.append(self._segment(self.start, self.t))
            self.start = None
        return segments

    def _judge(self, samples: np.ndarray) -> list[Segment]:
        """Classify one step's frames against the noise floor and follow them through the cutting rules."""
        energies = frame_energies(samples, self.frame)
        around = np.concatenate([*self.history, energies])
        sounding = around[around > DIGITAL_SILENCE_DB]  # a gap of zeros is no noise floor
        floor, loud = np.percentile(sounding if len(sounding) else around, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
        margin = min(self.threshold_db, max(MIN_THRESHOLD_DB, (loud - floor) / 2))
        self.history.append(energies)
        self.held.samples.append(samples)
        self.held.energies.append(energies)
        segments = [segment for is_speech in (energies > floor + margin).tolist()
                    for segment in self._frame(is_speech)]
        self.held.drop_before(self._keep_from())
        return segments

    def _frame(self, is_speech: bool) -> list[Segment]:
        """One frame through the cutting rules: the segment it closes, if any."""
        t, segments = self.t, []
        if is_speech:
            if self.start is None:  # speech after a short pause continues from the last cut, else keeps its padding
                short = self.pause is not None and t - self.pause < self.min_pause
                self.start = self.last_end if short else max(self.last_end, t - self.padding)
            self.pause = None
        else:
            if self.pause is None:
                self.pause = t
            if self.start is not None and t + 1 - self.pause >= self.min_pause:  # the pause closes the segment
                self.last_end = self.pause + min(self.padding, self.min_pause)
                segments.append(self._segment(self.start, self.last_end))
                self.start = None
        if self.start is not None and t + 1 - self.start >= self.max_frames:
            if self.pause is not None:  # in a pause: end the segment there, and let the pause decide what follows
                self.last_end = min(t + 1, self.pause + self.padding)
            else:
                quiet_from = self.start + self.max_frames // 2
                loudness = np.convolve(self.held.slice(quiet_from, t + 1, self.frame)[1], np.ones(5) / 5, mode="same")
                self.last_end = quiet_from + int(np.argmin(loudness))
            segments.append(self._segment(self.start, self.last_end))
            self.start = None if self.pause is not None else self.last_end
        self.t += 1
        return segments

    def _keep_from(self) -> int:
        """The first frame a segment may still need: the open one's start, or where the next could start."""
        if self.start is not None:
            return self.start
        if self.pause is not None and self.t - self.pause < self.min_pause:
            return self.last_end
        return max(self.last_end, self.t - self.padding)

    def _segment(self, begin: int, end: int) -> Segment:  # a copy, not a view that would keep all held audio alive
        return Segment(begin * self.frame, self.held.slice(begin, end, self.frame)[0].copy())
