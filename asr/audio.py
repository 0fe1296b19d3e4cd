"""Audio loading: any supported file in, mono float32 samples at 16 kHz out.

soundfile (libsndfile) decodes WAV, FLAC, OGG, MP3 and NIST SPHERE, and headerless raw
PCM when told its layout; soxr resamples. torchaudio is not used here: its loaders need
FFmpeg's system libraries since 2.9.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from asr.errors import AsrError

SAMPLE_RATE = 16_000
RAW_SUFFIXES = {".raw", ".pcm"}


class AudioError(AsrError):
    pass


@dataclass(frozen=True)
class RawFormat:
    """Layout of headerless PCM, which carries no header to say it."""

    sample_rate: int = SAMPLE_RATE
    byte_order: str = "little"  # "little" or "big"
    subtype: str = "PCM_16"  # any soundfile subtype: PCM_S8, PCM_16, PCM_24, PCM_32, FLOAT, ...
    channels: int = 1

    def __post_init__(self) -> None:
        if self.byte_order not in ("little", "big"):
            raise AudioError(f"raw byte order must be 'little' or 'big', not {self.byte_order!r}")
        if self.sample_rate <= 0 or self.channels <= 0:
            raise AudioError("raw sample rate and channel count must be positive")
        if self.subtype not in soundfile.available_subtypes("RAW"):
            raise AudioError(f"unknown raw sample format {self.subtype!r}")


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")


def _open(path: Path, raw: RawFormat | None) -> soundfile.SoundFile:
    """Open a readable file for decoding; ``.raw``/``.pcm`` files in the layout ``raw`` gives (16 kHz,
    16-bit little-endian mono when it is None)."""
    _check_readable(path)
    if raw is None and path.suffix.lower() in RAW_SUFFIXES:
        raw = RawFormat()
    layout = {} if raw is None else dict(format="RAW", subtype=raw.subtype, samplerate=raw.sample_rate,
                                          channels=raw.channels, endian=raw.byte_order.upper())
    try:
        return soundfile.SoundFile(path, **layout)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_first_line(error)})") from None


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, raw: RawFormat | None = None) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``; raw PCM as :func:`_open` says."""
    path = Path(path)
    with _open(path, raw) as sound:
        try:
            samples, rate = sound.read(dtype="float32", always_2d=True), sound.samplerate
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            raise AudioError(f"{path}: not a readable audio file ({_first_line(error)})") from None
    return to_model_input(samples, rate, sample_rate, source=str(path))


def to_model_input(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE, source: str = "audio") -> np.ndarray:
    """Mix (frames, channels) or (frames,) samples to mono, resample, and clean them up."""
    if rate <= 0 or rate > 1_000_000:
        raise AudioError(f"{source}: implausible sample rate {rate} Hz")
    samples = np.asarray(samples, dtype=np.float32)
    mono = samples.mean(axis=1) if samples.ndim == 2 else samples
    if mono.size == 0:
        raise AudioError(f"{source}: contains no audio samples")
    if not np.isfinite(mono).all():
        mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_duration(path: str | os.PathLike, raw: RawFormat | None = None) -> float:
    """Duration in seconds, read from the header (or file size, for raw PCM) without decoding."""
    with _open(Path(path), raw) as sound:
        return sound.frames / sound.samplerate


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1].split(": ")[-1] if text else type(error).__name__
