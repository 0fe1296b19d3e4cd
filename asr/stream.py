"""Transcribing audio as it arrives: samples are pushed in, and each segment is decoded the moment
its pause closes it, so a live source gets its words about a pause after they are spoken.

The segments are cut and decoded exactly as :func:`asr.transcribe.transcribe` does a file,
so a stream's transcript equals that of the same audio read as a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asr.audio import MonoStream, samples_first
from asr.decoding import Decoder, Word
from asr.segment import Segment, SegmentOptions, Segmenter
from asr.transcribe import Recognizer, decode_segments, float_samples, hold_mmap_threshold


@dataclass
class StreamSegment:
    """A decoded segment, in seconds from the start of the stream."""

    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


class Stream:
    """A transcription fed as the audio arrives: :meth:`accept` blocks of samples, then :meth:`finish`.

    Without a ``decoder``, the model's default is built here and closed by :meth:`finish`.
    """

    def __init__(self, recognizer: Recognizer, sample_rate: int, decoder: Decoder | None = None,
                 segmenting: SegmentOptions = SegmentOptions(), source: str = "stream"):
        hold_mmap_threshold()  # however long the stream runs, segments of every length come and go
        self.recognizer = recognizer
        self.model_rate = recognizer.frontend.config.sample_rate
        self.mono = MonoStream(sample_rate, self.model_rate, source)
        self.segmenter = Segmenter(segmenting, self.model_rate)
        self.own_decoder = decoder is None
        self.decoder = decoder or recognizer.decoder()
        self.source = source
        self.samples = 0  # at the model's rate, accepted so far

    def accept(self, samples: Any) -> list[StreamSegment]:
        """Take the next samples, a numpy array or tensor of (samples,) or (samples, channels), floats in
        [-1, 1] or integers; the segments they finish, decoded."""
        mono = self.mono.convert(samples_first(float_samples(samples), self.source))
        self.samples += len(mono)
        return self._decode(self.segmenter.accept(mono))

    def finish(self) -> list[StreamSegment]:
        """The stream has ended: the segments still open, decoded; the decoder built here is closed."""
        try:
            tail = self.mono.flush()
            self.samples += len(tail)
            return self._decode(self.segmenter.accept(tail) + self.segmenter.finish())
        finally:
            if self.own_decoder:
                self.decoder.close()

    @property
    def seconds(self) -> float:
        """How much audio has been accepted."""
        return self.samples / self.model_rate

    def _decode(self, segments: list[Segment]) -> list[StreamSegment]:
        if not segments:
            return []
        words = decode_segments(self.recognizer, self.decoder, segments)
        return [StreamSegment(round(segment.start / self.model_rate, 3), round(segment.end / self.model_rate, 3),
                              " ".join(word.word for word in segment_words), segment_words)
                for segment, segment_words in zip(segments, words)]
