"""Waveform augmentation for training: silence trimming, speed and tempo perturbation, room-tone padding,
telephone band and additive noise.

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
from asr.data import quiet_unless
from asr.errors import AsrError

NOISE_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".sph"}
FSDD_TRIM_TOP_DB = 30.0  # how far under its peak FSDD's recordings are cut to their speech
NOISE_EXPONENTS = (0.0, 2.0)  # synthetic noise's colour (coloured_noise) is drawn in this range: white to brown


@dataclass
class AugmentConfig:
    # Share of utterances cut to their speech, the quiet before and after it (trim_top_db under the peak) removed,
    # as FSDD's recordings are cut: the model then knows its many wideband speakers in that condition too, and
    # the tight cut no longer tells it which corpus, and so which few speakers, it is hearing.
    trim_probability: float = 0.0
    trim_top_db: float = FSDD_TRIM_TOP_DB
    # Kaldi's recipe: each utterance resampled at one of these speeds (tempo and pitch move together).
    speeds: list[float] = field(default_factory=lambda: [1.0])
    # Each utterance stretched to one of these tempos, its pitch and formants kept (a phase vocoder): speakers
    # differ in how long they hold a word far more than speeds of 0.9 to 1.1 cover (FSDD's five say "six" in a
    # median 0.24 to 0.71 s), and a model that has heard few of them alone learns a word's length as a cue.
    tempos: list[float] = field(default_factory=lambda: [1.0])
    # Share of utterances low-passed to the telephone band (resampled to 8 kHz and back): a model trained on
    # wideband speech then hears its many speakers the way narrowband corpora (FSDD, telephone) sound.
    narrowband_probability: float = 0.0
    # Share of utterances given up to pad_seconds of room tone at each end, over a noise floor pad_snr_db below
    # the speech: a corpus trimmed tight to its words (FSDD) then sounds like any other recording, and the model
    # cannot learn the trimming as a cue to which corpus (and so which few speakers) it is hearing.
    pad_probability: float = 0.0
    pad_seconds: float = 0.5
    pad_snr_db: list[float] = field(default_factory=lambda: [20.0, 50.0])
    # Noise mixed into noise_probability of the utterances at an SNR drawn in snr_db: from the recordings in
    # noise_dir (searched recursively), or, with coloured_noise and no noise corpus, Gaussian noise whose power
    # falls as 1/f**e, e drawn in NOISE_EXPONENTS (white to brown): a model trained on quiet recordings alone misreads
    # a word under a noise floor a listener would not notice.
    noise_dir: str = ""
    coloured_noise: bool = False
    noise_probability: float = 0.5  # share of utterances that get noise
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])  # signal-to-noise ratio drawn uniformly in this range

    def problems(self) -> Iterator[tuple[str, str]]:
        for key in ("speeds", "tempos"):
            factors = getattr(self, key)
            if not factors or any(not 0.5 <= factor <= 2.0 for factor in factors):
                yield key, f"must be a non-empty list of factors between 0.5 and 2, not {factors}"
        for key in ("trim_probability", "narrowband_probability", "pad_probability", "noise_probability"):
            if not 0 <= getattr(self, key) <= 1:
                yield key, f"must be in [0, 1], not {getattr(self, key)}"
        if not self.trim_top_db > 0:
            yield "trim_top_db", f"must be a positive number of decibels, not {self.trim_top_db}"
        if not 0 <= self.pad_seconds <= 10:
            yield "pad_seconds", f"must be between 0 and 10 seconds, not {self.pad_seconds}"
        for key in ("pad_snr_db", "snr_db"):
            low_high = getattr(self, key)
            if len(low_high) != 2 or low_high[0] > low_high[1]:
                yield key, f"must be [low, high] in decibels, not {low_high}"
        if self.noise_dir and not Path(self.noise_dir).is_dir():
            yield "noise_dir", f"{self.noise_dir}: no such folder"
        elif self.noise_dir and not noise_files(self.noise_dir):
            yield "noise_dir", f"{self.noise_dir}: holds no audio files"
        if self.noise_dir and self.coloured_noise:
            yield "coloured_noise", "cannot be combined with noise_dir: choose one source of noise"

    @property
    def slowest(self) -> float:
        """The lowest rate, speed times tempo, at which an utterance can be played."""
        return min(self.speeds) * min(self.tempos)

    @property
    def fastest(self) -> float:
        return max(self.speeds) * max(self.tempos)

    def longest(self, duration: float) -> float:
        """The most seconds an utterance of ``duration`` can last once augmented: slowest rate, most padding."""
        return duration / self.slowest + (2 * self.pad_seconds if self.pad_probability > 0 else 0.0)


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
                             **quiet_unless(progress))]


def change_speed(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play ``samples`` ``factor`` times faster: 1.1 shortens by 1/1.1 and raises the pitch, like ``sox speed``."""
    if factor == 1.0:
        return samples
    return soxr.resample(samples, SAMPLE_RATE * factor, SAMPLE_RATE).astype(np.float32)


def change_tempo(samples: np.ndarray, factor: float) -> np.ndarray:
    """Play ``samples`` ``factor`` times faster with the pitch and formants kept, like ``sox tempo``: a phase
    vocoder over 32 ms windows, short enough to keep a plosive's burst, with its length exact."""
    if factor == 1.0 or len(samples) == 0:
        return samples
    stretched = librosa.effects.time_stretch(samples, rate=factor, n_fft=512, hop_length=128)
    return librosa.util.fix_length(stretched, size=round(len(samples) / factor)).astype(np.float32)


def to_narrowband(samples: np.ndarray, rate: int = 8000) -> np.ndarray:
    """``samples`` as if recorded at ``rate``: everything above its Nyquist frequency removed, length kept."""
    return soxr.resample(soxr.resample(samples, SAMPLE_RATE, rate), rate, SAMPLE_RATE)[:len(samples)].astype(np.float32)


def mean_power(samples: np.ndarray) -> float:
    """Mean square of ``samples`` in float64 (0 for none)."""
    return float(np.mean(samples.astype(np.float64) ** 2)) if len(samples) else 0.0


def coloured_noise(length: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-power Gaussian noise whose power falls as 1/f**exponent: 0 is white, 1 pink, 2 brown (a rumble)."""
    if length == 0:
        return np.zeros(0)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    spectrum *= np.maximum(frequencies, 20.0) ** (-exponent / 2)  # held flat below 20 Hz, where no mic hears
    noise = np.fft.irfft(spectrum, length)
    power = mean_power(noise)
    return noise / np.sqrt(power) if power > 0 else noise


def pad_with_room_tone(samples: np.ndarray, before: int, after: int, snr_db: float, exponent: float,
                       rng: np.random.Generator) -> np.ndarray:
    """``samples`` with ``before`` and ``after`` samples added at its ends, and coloured noise ``snr_db``
    below the speech's power under all of it, as a recording has a noise floor before, during and after a word."""
    gain = np.sqrt(mean_power(samples) / 10 ** (snr_db / 10))
    floor = coloured_noise(before + len(samples) + after, exponent, rng) * gain
    floor[before:before + len(samples)] += samples
    return floor.astype(np.float32)


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
    drawn with the audio (the room tone's level and colour, the telephone band, the noise)."""
    trim: bool
    speed: float
    tempo: float
    pad: tuple[int, int] | None  # samples of room tone before and after the speech
    rng: np.random.Generator


class Augmentation:
    """Draws and applies one utterance's augmentation; noise files are read once per worker, when first used."""

    def __init__(self, config: AugmentConfig, seed: int):
        self.config = config
        self.seed = seed
        self.noise_paths = noise_files(config.noise_dir) if config.noise_dir else []
        self._noise_cache: dict[Path, np.ndarray] = {}
        # librosa imports what trimming and the phase vocoder need on their first call (about 2 s): made here, in
        # the training process, those calls' imports are inherited by each epoch's freshly forked loader worker
        # instead of delaying its first batch.
        quiet = np.zeros(SAMPLE_RATE // 10, dtype=np.float32)
        if config.trim_probability > 0:
            trim_silence(quiet, config.trim_top_db)
        if config.tempos != [1.0]:
            change_tempo(quiet, 2.0)

    @property
    def adds_noise(self) -> bool:
        return self.config.coloured_noise or bool(self.noise_paths)

    @property
    def active(self) -> bool:
        config = self.config
        return (config.speeds != [1.0] or config.tempos != [1.0] or config.trim_probability > 0
                or config.pad_probability > 0 or config.narrowband_probability > 0 or self.adds_noise)

    def draw(self, epoch: int, index: int) -> Draw:
        """Utterance ``index``'s trimming, speed, tempo and padding in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, index])
        trim = rng.random() < self.config.trim_probability
        speed = float(rng.choice(self.config.speeds))
        tempo = float(rng.choice(self.config.tempos))
        pad = None
        if rng.random() < self.config.pad_probability:
            before, after = rng.integers(0, round(self.config.pad_seconds * SAMPLE_RATE) + 1, size=2)
            pad = int(before), int(after)
        return Draw(trim, speed, tempo, pad, rng)

    def durations(self, durations: Sequence[float], epoch: int, trimmed: Sequence[float] | None = None
                  ) -> list[float]:
        """The utterances' seconds in ``epoch`` once augmented, from their ``durations`` as recorded and, for those
        drawn to be trimmed, ``trimmed`` (``trimmed_durations``): speeds, tempos and padding are drawn before the
        audio is read. Without ``trimmed``, an upper bound: trimming can only shorten an utterance."""
        lengths = []
        for index, duration in enumerate(durations):
            draw = self.draw(epoch, index)
            if draw.trim and trimmed is not None:
                duration = trimmed[index]
            lengths.append(duration / (draw.speed * draw.tempo) + (sum(draw.pad) / SAMPLE_RATE if draw.pad else 0.0))
        return lengths

    def __call__(self, samples: np.ndarray, epoch: int, index: int) -> np.ndarray:
        draw = self.draw(epoch, index)
        rng = draw.rng
        if draw.trim:
            samples = trim_silence(samples, self.config.trim_top_db)
        samples = change_tempo(change_speed(samples, draw.speed), draw.tempo)
        if draw.pad:
            low, high = self.config.pad_snr_db
            samples = pad_with_room_tone(samples, *draw.pad, float(rng.uniform(low, high)),
                                         float(rng.uniform(*NOISE_EXPONENTS)), rng)
        if rng.random() < self.config.narrowband_probability:
            samples = to_narrowband(samples)
        if self.adds_noise and rng.random() < self.config.noise_probability:
            low, high = self.config.snr_db
            samples = add_noise(samples, self._noise(rng, len(samples)), float(rng.uniform(low, high)), rng)
        return samples

    def _noise(self, rng: np.random.Generator, length: int) -> np.ndarray:
        if self.config.coloured_noise:
            return coloured_noise(length, float(rng.uniform(*NOISE_EXPONENTS)), rng)
        path = self.noise_paths[int(rng.integers(len(self.noise_paths)))]
        if path not in self._noise_cache:
            try:
                self._noise_cache[path] = load_audio(path)
            except AsrError as error:
                raise AsrError(f"augment.noise_dir: {error}") from None
        return self._noise_cache[path]
