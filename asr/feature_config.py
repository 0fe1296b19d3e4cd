"""The front end's settings, apart from any implementation of it: the torchaudio front end
(``asr.features``) and the numpy one (``asr.numpy_features``) are both built from a FeatureConfig,
and the ONNX runtime reads one without importing torch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from asr.audio import SAMPLE_RATE

NORMALIZATIONS = ("per_feature", "all_features")
LOG_FLOOR = 1e-6  # added to mel power before the log
Count = TypeVar("Count")  # an int, or an array or tensor of them


@dataclass
class FeatureConfig:
    sample_rate: int = SAMPLE_RATE
    n_mels: int = 80
    window_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 512
    # Per-utterance normalisation: "per_feature" gives each mel bin zero mean and unit variance over
    # the utterance; "all_features" one mean and variance over all its bins and frames, which removes
    # the gain but keeps the spectral shape, the only cue left in a word cut to its speech.
    normalize: str = "per_feature"
    # Kaldi's online CMVN, for short utterances: with per_feature, each bin's mean and variance pool the
    # utterance's frames with prior_frames frames of the training set's (prior_mean and prior_std, per bin,
    # measured when training starts and kept in the model). A word of 40 frames then keeps most of the
    # spectral shape that tells its vowel, a sentence of 400 frames still loses its recording's colouring.
    prior_frames: float = 0.0
    prior_mean: list[float] = field(default_factory=list)
    prior_std: list[float] = field(default_factory=list)
    # Random channel, applied in training only: each utterance's mel power scaled by a gain drawn in
    # +-random_gain_db and a smooth EQ curve, drawn in +-random_eq_db at a few points (asr.features.EQ_POINTS)
    # evenly spread over the mel bins and linear between them, as another microphone, room and level colour a voice. With a
    # prior (prior_frames) a short word keeps its recording's colouring, which the model must learn to ignore.
    random_gain_db: float = 0.0
    random_eq_db: float = 0.0
    # SpecAugment (Park et al., 2019), applied in training only.
    freq_masks: int = 2
    freq_mask_width: int = 27
    time_masks: int = 2
    time_mask_width: int = 40
    time_mask_max_ratio: float = 0.05  # no more than this fraction of an utterance's frames per time mask

    def problems(self) -> Iterator[tuple[str, str]]:
        """(key, what is wrong) for each value no front end can be built from."""
        for key in ("sample_rate", "n_mels", "window_ms", "hop_ms", "n_fft"):
            if getattr(self, key) <= 0:
                yield key, f"must be positive, not {getattr(self, key)}"
        if self.normalize not in NORMALIZATIONS:
            yield "normalize", f"must be one of {', '.join(NORMALIZATIONS)}, not {self.normalize!r}"
        if self.prior_frames < 0:
            yield "prior_frames", f"must be zero or more, not {self.prior_frames}"
        if self.prior_frames > 0 and self.normalize != "per_feature":
            yield "prior_frames", "needs normalize: per_feature"
        for key in ("prior_mean", "prior_std"):
            if getattr(self, key) and len(getattr(self, key)) != self.n_mels:
                yield key, f"must hold one value per mel bin ({self.n_mels}), not {len(getattr(self, key))}"
        if self.win_length > self.n_fft:
            yield "window_ms", f"gives a window of {self.win_length} samples, longer than n_fft ({self.n_fft})"
        for key in ("random_gain_db", "random_eq_db", "freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            if getattr(self, key) < 0:
                yield key, f"must be zero or more, not {getattr(self, key)}"
        if not 0 <= self.time_mask_max_ratio <= 1:
            yield "time_mask_max_ratio", f"must be in [0, 1], not {self.time_mask_max_ratio}"

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def win_length(self) -> int:
        return int(round(self.sample_rate * self.window_ms / 1000))

    def num_frames(self, num_samples: Count) -> Count:
        """Frames the front end makes of so many samples (centred STFT)."""
        return num_samples // self.hop_length + 1
