"""Audio loading: any supported file in, mono float32 samples at 16 kHz out.

soundfile (libsndfile) decodes WAV, FLAC, OGG, MP3 and NIST SPHERE, and headerless raw
PCM when told its layout; soxr resamples. torchaudio is not used here: its loaders need
FFmpeg's system libraries since 2.9.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from asr.errors import AsrError

SAMPLE_RATE = 16_000
RAW_SUFFIXES = {".raw", ".pcm"}
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".sph", ".nist", ".aif", ".aiff",
                            ".aifc", ".au", ".snd", ".w64", ".caf", *RAW_SUFFIXES})
# Outside this range a header's rate is damage, not audio (and resampling 1 Hz audio to 16 kHz would take forever).
RATE_RANGE = (1_000, 1_000_000)
BLOCK_SECONDS = 10.0  # what stream_audio reads at a time
MAX_CHANNELS = 64  # a 2-D array whose shorter axis is longer than this is not (samples, channels) audio


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
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")


@contextlib.contextmanager
def _open(path: Path, raw: RawFormat | None) -> Iterator[soundfile.SoundFile]:
    """Open a readable file for decoding; ``.raw``/``.pcm`` files in the layout ``raw`` gives (16 kHz,
    16-bit little-endian mono when it is None); a WAV whose header says it is empty, by what follows it."""
    _check_readable(path)
    if raw is None and path.suffix.lower() in RAW_SUFFIXES:
        raw = RawFormat()
    layout = {} if raw is None else dict(format="RAW", subtype=raw.subtype, samplerate=raw.sample_rate,
                                          channels=raw.channels, endian=raw.byte_order.upper())
    with _sound_file(os.fsencode(path), path, **layout) as sound:  # bytes: a name need not be valid UTF-8
        data = _unsized_wav_data(path, sound) if raw is None else None
        if data is None:
            yield sound
            return
        layout = dict(format="RAW", subtype=sound.subtype, samplerate=sound.samplerate, channels=sound.channels,
                      endian="LITTLE")
    with open(path, "rb") as file, _sound_file(_FileFrom(file, data), path, **layout) as sound:
        yield sound


def _sound_file(file: bytes | _FileFrom, path: Path, **layout) -> soundfile.SoundFile:
    try:
        return soundfile.SoundFile(file, **layout)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        if _is_shorten_sphere(path):
            raise AudioError(f"{path}: NIST SPHERE audio compressed with shorten, which libsndfile cannot decode; "
                             f"convert it to WAV first (sph2pipe -f wav IN.sph OUT.wav)") from None
        raise AudioError(f"{path}: not a readable audio file ({_first_line(error)})") from None


def _is_shorten_sphere(path: Path) -> bool:
    """Whether a file is NIST SPHERE with shorten-compressed samples, as LDC ships many corpora."""
    with open(path, "rb") as file:
        head = file.read(4096)
    return head.startswith(b"NIST_1A") and b"shorten" in head.partition(b"end_head")[0]


def _unsized_wav_data(path: Path, sound: soundfile.SoundFile) -> int | None:
    """Where the samples of a WAV file start when its header counts none but samples follow it, as a
    recorder that crashed before writing the sizes leaves it; None for any other file."""
    if sound.frames or sound.format not in ("WAV", "WAVEX") or sound.subtype not in soundfile.available_subtypes("RAW"):
        return None
    with open(path, "rb") as file:
        header = file.read(12)
        if header[:4] != b"RIFF" or header[8:] != b"WAVE":
            return None
        while len(chunk := file.read(8)) == 8:
            size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return file.tell() if os.fstat(file.fileno()).st_size > file.tell() else None
            file.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even length
    return None


class _FileFrom:
    """A binary file seen from ``offset`` on: libsndfile reads headerless samples only from a file's start."""

    def __init__(self, file, offset: int):
        self.file, self.offset = file, offset
        file.seek(offset)

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        return self.file.seek(position + self.offset if whence == os.SEEK_SET else position, whence) - self.offset

    def tell(self) -> int:
        return self.file.tell() - self.offset

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, raw: RawFormat | None = None) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``; raw PCM as :func:`_open` says."""
    path = Path(path)
    with _open(path, raw) as sound:
        samples, rate = _read(sound, path), sound.samplerate
    return to_model_input(samples, rate, sample_rate, source=str(path))


def stream_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE, raw: RawFormat | None = None,
                 block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """:func:`load_audio`'s samples in consecutive blocks, read, mixed and resampled a block at a time,
    so that a file of any length is read in bounded memory. Concatenated, they equal ``load_audio``'s."""
    path = Path(path)
    with _open(path, raw) as sound:
        frames = max(1, int(block_seconds * sound.samplerate))

        def blocks() -> Iterator[np.ndarray]:
            while len(block := _read(sound, path, frames)):
                yield block

        yield from mono_stream(blocks(), sound.samplerate, sample_rate, str(path))


def to_model_input(samples: np.ndarray, rate: int, sample_rate: int = SAMPLE_RATE, source: str = "audio") -> np.ndarray:
    """Mix (frames, channels) or (frames,) samples to mono, resample, and clean them up."""
    return np.concatenate(list(mono_stream([samples], rate, sample_rate, source)))


def mono_stream(blocks: Iterable[np.ndarray], rate: int, sample_rate: int = SAMPLE_RATE, source: str = "audio"
                ) -> Iterator[np.ndarray]:
    """Consecutive blocks of (frames, channels) or (frames,) samples at ``rate`` as mono float32 blocks at
    ``sample_rate``: mixed down, NaN and infinities replaced, resampled as one continuous stream."""
    mono = MonoStream(rate, sample_rate, source)
    empty = True
    for block in blocks:
        converted = mono.convert(block)
        empty = empty and len(block) == 0
        yield converted
    if empty:
        raise AudioError(f"{source}: contains no audio samples")
    if mono.resampler:
        yield mono.flush()


class MonoStream:
    """:func:`mono_stream` for samples pushed in as they arrive: :meth:`convert` each block, then :meth:`flush`."""

    def __init__(self, rate: int, sample_rate: int = SAMPLE_RATE, source: str = "audio"):
        check_sample_rate(rate, source)
        self.resampler = (soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
                          if rate != sample_rate else None)

    def convert(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        mono = block.mean(axis=1) if block.ndim == 2 else block
        if not np.isfinite(mono).all():
            mono = np.nan_to_num(mono, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.ascontiguousarray(self.resampler.resample_chunk(mono) if self.resampler else mono, dtype=np.float32)

    def flush(self) -> np.ndarray:
        """What the resampler still holds, once the stream has ended."""
        if self.resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self.resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def samples_first(samples: np.ndarray, source: str = "audio") -> np.ndarray:
    """Samples given as (samples,), (samples, channels) as soundfile reads them, or (channels, samples)
    as librosa and torchaudio do, as (samples,) or (samples, channels): the longer axis is time.

    An array whose layout cannot be told that way (square, or both axes too long for channels)
    is refused rather than guessed, since the wrong guess transcribes a handful of "samples".
    """
    if samples.size == 0:
        return samples.reshape(0)  # no samples in any layout: refused as empty downstream
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(f"{source}: a {samples.ndim}-dimensional array is not audio "
                         "(pass (samples,), (samples, channels) or (channels, samples))")
    rows, columns = samples.shape
    if rows == columns or min(rows, columns) > MAX_CHANNELS:
        raise AudioError(f"{source}: cannot tell samples from channels in a {rows}x{columns} array "
                         f"(the longer axis is taken as time, with at most {MAX_CHANNELS} channels)")
    return samples if rows > columns else samples.T


def check_sample_rate(rate: float, source: str = "audio") -> None:
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise AudioError(f"{source}: implausible sample rate {rate:g} Hz")


def audio_duration(path: str | os.PathLike, raw: RawFormat | None = None) -> float:
    """Duration in seconds, read from the header (or file size, for raw PCM) without decoding."""
    with _open(Path(path), raw) as sound:
        return sound.frames / sound.samplerate


def _read(sound: soundfile.SoundFile, path: Path, frames: int = -1) -> np.ndarray:
    """(frames, channels) float32 samples from where ``sound`` is; all the rest when ``frames`` is -1."""
    try:
        return sound.read(frames, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1].split(": ")[-1] if text else type(error).__name__
