"""Waveform augmentation for training: silence trimming, speed perturbation, telephone band and additive noise.

All run in the data loader's workers, on the waveform, before features (SpecAugment,
the other half of augmentation, lives in the front end). Each utterance's draw depends
only on (seed, epoch, index), so a run is reproducible whatever the worker count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import librosa
import numpy as np
import soxr
from tqdm import tqdm

from asr.audio import SAMPLE_RATE, load_audio
from asr.errors import AsrError
from asr.terminal import progress_bar_options

NOISE_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".sph"}
FSDD_TRIM_TOP_DB = 30.0  # how far under its peak FSDD's recordings are cut to their speech


@dataclass
class AugmentConfig:
    # Share of utterances cut to their speech, the quiet before and after it (trim_top_db under the peak) removed,
    # as FSDD's recordings are cut: the model then knows its many wideband speakers in that condition too, and
    # the tight cut no longer tells it which corpus, and so which few speakers, it is hearing.
    trim_probability: float = 0.0
    trim_top_db: float = FSDD_TRIM_TOP_DB
    # Kaldi's recipe: each utterance resampled at one of these speeds (tempo and pitch move together).
    speeds: list[float] = field(default_factory=lambda: [1.0])
    # Share of utterances low-passed to the telephone band (resampled to 8 kHz and back): a model trained on
    # wideband speech then hears its many speakers the way narrowband corpora (FSDD, telephone) sound.
    narrowband_probability: float = 0.0
    # Noise from the recordings in noise_dir (searched recursively) mixed into noise_probability of the utterances
    # at an SNR drawn in snr_db: a model trained on quiet recordings alone misreads a word under a noise floor a
    # listener would not notice.
    noise_dir: str = ""
    noise_probability: float = 0.5  # share of utterances that get noise
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])  # signal-to-noise ratio drawn uniformly in this range

    def problems(self) -> Iterator[tuple[str, str]]:
        if not self.speeds or any(not 0.5 <= speed <= 2.0 for speed in self.speeds):
            yield "speeds", f"must be a non-empty list of factors between 0.5 and 2, not {self.speeds}"
        for key in ("trim_probability", "narrowband_probability", "noise_probability"):
            if not 0 <= getattr(self, key) <= 1:
                yield key, f"must be in [0, 1], not {getattr(self, key)}"
        if not self.trim_top_db > 0:
            yield "trim_top_db", f"must be a positive number of decibels, not {self.trim_top_db}"
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            yield "snr_db", f"must be [low, high] in decibels, not {self.snr_db}"
        if self.noise_dir and not Path(self.noise_dir).is_dir():
            yield "noise_dir", f"{self.noise_dir}: no such folder"
        elif self.noise_dir and not noise_files(self.noise_dir):
            yield "noise_dir", f"{self.noise_dir}: holds no audio files"

    @property
    def fastest(self) -> float:
        return max(self.speeds)

    def longest(self, duration: float) -> float:
        """The most seconds an utterance of ``duration`` can last once augmented: played at the slowest speed."""
        return duration / min(self.speeds)


def noise_files(folder: str | Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in NOISE_SUFFIXES and p.is_file())


def trim_silence(samples: np.ndarray, top_db: float) -> np.ndarray:
    """``samples`` without the stretches at either end quieter than ``top_db`` under their loudest frame
    (all of them if nothing is that loud)."""
    trimmed, _ = librosa.effects.trim(samples, top_db=top_db)
    return trimmed if len(trimmed) else samples


def trimmed_durations(paths: Sequence[str | Path], top_db: float, progress: bool = False) -> list[float]:
    """Each recording's seconds once trimmed (``trim_silence``), which depend on its audio alone, not on the
    epoch: with them, ``Augmentation.durations`` knows the length of an utterance drawn to be trimmed."""
    return [len(trim_silence(load_audio(path), top_db)) / SAMPLE_RATE
            for path in tqdm(paths, desc="measuring trimmed durations", unit="file", leave=False,
                             **progress_bar_options(progress))]


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play ``samples`` ``factor`` times faster: 1.1 shortens by 1/1.1 and raises the pitch, like ``sox speed``."""
    if factor == 1.0:
        return samples
    return soxr.resample(samples, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def to_narrowband(samples: np.ndarray, rate: int = 8000) -> np.ndarray:
    """``samples`` as if recorded at ``rate``: everything above its Nyquist frequency removed, length kept."""
    return soxr.resample(soxr.resample(samples, SAMPLE_RATE, rate), rate, SAMPLE_RATE)[:len(samples)].astype(np.float32)


def mean_power(samples: np.ndarray) -> float:
    """Mean square of ``samples`` in float64 (0 for none)."""
    return float(np.mean(samples.astype(np.float64) ** 2)) if len(samples) else 0.0


def add_noise(samples: np.ndarray, noise: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Mix a random stretch of ``noise`` (looped if too short) into ``samples`` at ``snr_db``."""
    if len(samples) == 0 or len(noise) == 0:
        return samples
    start = int(rng.integers(len(noise)))
    stretch = np.resize(np.roll(noise, -start), len(samples))
    signal_power, noise_power = mean_power(samples), mean_power(stretch)
    if signal_power == 0 or noise_power == 0:
        return samples
    gain = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (samples + gain * stretch).astype(np.float32)


@dataclass
class Draw:
    """What one utterance gets in one epoch, drawn before its audio is read; ``rng`` goes on to draw what is
    drawn with the audio (the telephone band, the noise)."""
    trim: bool
    speed: float
    rng: np.random.Generator


class Augmentation:
    """Draws and applies one utterance's augmentation; noise files are read once per worker, when first used."""

    def __init__(self, config: AugmentConfig, seed: int):
        self.config = config
        self.seed = seed
        self.noise_paths = noise_files(config.noise_dir) if config.noise_dir else []
        self._noise_cache: dict[Path, np.ndarray] = {}
        if config.trim_probability > 0:
            # librosa imports what trimming needs on its first call (2.5 s): made here, in the training process,
            # that call's imports are inherited by each epoch's freshly forked loader worker instead of delaying
            # its first batch.
            trim_silence(np.zeros(SAMPLE_RATE // 10, dtype=np.float32), config.trim_top_db)

    @property
    def active(self) -> bool:
        config = self.config
        return (config.speeds != [1.0] or config.trim_probability > 0 or config.narrowband_probability > 0
                or bool(self.noise_paths))

    def draw(self, epoch: int, index: int) -> Draw:
        """Utterance ``index``'s trimming and speed in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        trim = rng.random() < self.config.trim_probability
        speed = float(rng.choice(self.config.speeds))
        return Draw(trim, speed, rng)

    def durations(self, durations: Sequence[float], epoch: int, trimmed: Sequence[float] | None = None
                  ) -> list[float]:
        """The utterances' seconds in ``epoch`` once augmented, from their ``durations`` as recorded and, for those
        drawn to be trimmed, ``trimmed`` (``trimmed_durations``): speeds are drawn before the audio is read.
        Without ``trimmed``, an upper bound: trimming can only shorten an utterance."""
        lengths = []
        for index, duration in enumerate(durations):
            draw = self.draw(epoch, index)
            if draw.trim and trimmed is not None:
                duration = trimmed[index]
            lengths.append(duration / draw.speed)
        return lengths

    def __call__(self, samples: np.ndarray, epoch: int, index: int) -> np.ndarray:
        draw = self.draw(epoch, index)
        rng = draw.rng
        if draw.trim:
            samples = trim_silence(samples, self.config.trim_top_db)
        samples = change_speed(samples, draw.speed)
        if rng.random() < self.config.narrowband_probability:
            samples = to_narrowband(samples)
        if self.noise_paths and rng.random() < self.config.noise_probability:
            low, high = self.config.snr_db
            samples = add_noise(samples, self._noise(rng), float(rng.uniform(low, high)), rng)
        return samples

    def _noise(self, rng: np.random.Generator) -> np.ndarray:
        path = self.noise_paths[int(rng.integers(len(self.noise_paths)))]
        if path not in self._noise_cache:
            try:
                self._noise_cache[path] = load_audio(path)
            except AsrError as error:
                raise AsrError(f"augment.noise_dir: {error}") from None
        return self._noise_cache[path]
