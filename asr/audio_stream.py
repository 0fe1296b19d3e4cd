"""Reading audio as it arrives from a pipe, a named pipe or a device that cannot seek.

The first bytes say what it is: a WAV stream (its size fields may be 0 or 0xFFFFFFFF, as
ffmpeg and arecord write them when they cannot seek back; the data then runs to the end),
FLAC or Ogg, decoded by libsndfile as the bytes come, or, when a raw layout is given,
headerless PCM. Samples are handed on as soon as they are read, a block of at most
``BLOCK_SECONDS`` at a time, and nothing is kept behind them: memory stays bounded
however long the stream runs. A stream that breaks off mid-sample or mid-frame ends
there, with a warning; one that is not audio is refused before anything is read past
its first bytes.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import soundfile

from asr.audio import SAMPLE_RATE, AudioError, RawFormat, check_sample_rate

BLOCK_SECONDS = 0.1  # the most a block waits for, so that a pause is seen as it happens
READ_BYTES = 1 << 16
KEEP_BYTES = 1 << 20  # how far back libsndfile's FLAC reader may seek
UNKNOWN_LENGTH = 1 << 62
OGG_FIRST_BYTES = 1 << 14
WAV_ENCODINGS = {(1, 8): "PCM_U8", (1, 16): "PCM_16", (1, 24): "PCM_24", (1, 32): "PCM_32", (3, 32): "FLOAT",
                 (3, 64): "DOUBLE"}  # (format tag, bits per sample) -> libsndfile's subtype
UNSIZED = (0, 0xFFFFFFFF)  # what a writer that cannot seek back leaves in a size field
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8}


@dataclass
class AudioStream:
    sample_rate: int
    blocks: Iterator[np.ndarray]  # (frames, channels) float32 samples as they arrive


def open_stream(fd: int, name: str, raw: RawFormat | None = None,
                warn: Callable[[str], None] = lambda message: None) -> AudioStream:
    """Audio arriving on the file descriptor ``fd`` (read, not closed); ``raw`` is the layout of
    headerless PCM, which is refused without it. ``warn`` hears of a stream that broke off."""
    source = _Bytes(fd)
    head = source.read(12)
    if not head:
        raise AudioError(f"{name}: empty stream, no audio")
    if head[:4] in (b"RIFF", b"RF64") and (len(head) < 12 or head[8:12] == b"WAVE"):
        return _wav(source, name, warn)
    if head[:4] == b"fLaC":
        source.position = 0
        return _decoded(soundfile.SoundFile(source), name, warn)
    if head[:4] == b"OggS":
        return _decoded(soundfile.SoundFile(_replayed(fd, bytes(source.kept))), name, warn)
    if raw is None:
        raise AudioError(f"{name}: not audio that can be read as it arrives (WAV, FLAC or Ogg); "
                         "for headerless PCM give its layout with --raw-sample-rate and the other --raw-* options")
    source.position = 0
    return AudioStream(raw.sample_rate, _pcm(source, raw, raw.byte_order, name, warn))


def _wav(source: _Bytes, name: str, warn: Callable[[str], None]) -> AudioStream:
    """Parse a WAV header chunk by chunk up to its data, which is read in blocks from there."""
    source.position = 12
    layout = None
    while True:
        chunk = source.read(8)
        if len(chunk) < 8:
            warn(f"{name}: the stream ended inside its WAV header, before any audio")
            return AudioStream(SAMPLE_RATE, iter(()))
        kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if kind == b"data":
            if layout is None:
                raise AudioError(f"{name}: not a readable WAV stream (no fmt chunk before its data)")
            limit = None if size in UNSIZED else size
            return AudioStream(layout.sample_rate, _pcm(source, layout, "little", name, warn, limit))
        body = source.read(size + size % 2) if kind == b"fmt " or size not in UNSIZED else b""
        if len(body) < size:
            warn(f"{name}: the stream ended inside its WAV header, before any audio")
            return AudioStream(SAMPLE_RATE, iter(()))
        if kind == b"fmt ":
            layout = _wav_layout(body, name)


def _wav_layout(fmt: bytes, name: str) -> RawFormat:
    if len(fmt) < 16:
        raise AudioError(f"{name}: not a readable WAV stream (its fmt chunk is {len(fmt)} bytes)")
    tag, channels, rate = int.from_bytes(fmt[0:2], "little"), int.from_bytes(fmt[2:4], "little"), \
        int.from_bytes(fmt[4:8], "little")
    bits = int.from_bytes(fmt[14:16], "little")
    if tag == WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], "little")
    subtype = WAV_ENCODINGS.get((tag, bits))
    if subtype is None:
        raise AudioError(f"{name}: a WAV stream in encoding {tag} with {bits}-bit samples cannot be read as it "
                         "arrives (PCM or float only); convert it to PCM WAV or FLAC")
    if channels < 1:
        raise AudioError(f"{name}: not a readable WAV stream (its header says {channels} channels)")
    check_sample_rate(rate, name)
    return RawFormat(sample_rate=rate, subtype=subtype, channels=channels)


def _pcm(source: _Bytes, layout: RawFormat, byte_order: str, name: str, warn: Callable[[str], None],
         limit: int | None = None) -> Iterator[np.ndarray]:
    """Samples in ``layout`` as they arrive: what has come, up to ``BLOCK_SECONDS`` worth, a block at a time."""
    if layout.subtype not in SAMPLE_BYTES:
        raise AudioError(f"{name}: {layout.subtype} samples cannot be read as they arrive "
                         f"(one of {', '.join(SAMPLE_BYTES)})")
    width = SAMPLE_BYTES[layout.subtype] * layout.channels
    most = max(width, int(BLOCK_SECONDS * layout.sample_rate) * width)
    pending = b""
    remaining = limit
    while remaining is None or remaining > 0:
        data = source.read_available(most if remaining is None else min(most, remaining))
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        pending += data
        whole = len(pending) // width * width
        if whole:
            yield soundfile.read(io.BytesIO(pending[:whole]), dtype="float32", always_2d=True, format="RAW",
                                 subtype=layout.subtype, samplerate=layout.sample_rate, channels=layout.channels,
                                 endian=byte_order.upper())[0]
            pending = pending[whole:]
    if pending:
        warn(f"{name}: the stream ended mid-sample; its last {len(pending)} bytes were left out")


def _decoded(sound: soundfile.SoundFile, name: str, warn: Callable[[str], None]) -> AudioStream:
    """FLAC or Ogg decoded by libsndfile a block at a time; a stream broken off mid-frame ends there."""
    frames = max(1, int(BLOCK_SECONDS * sound.samplerate))
    check_sample_rate(sound.samplerate, name)

    def blocks() -> Iterator[np.ndarray]:
        with sound:
            while True:
                try:
                    block = sound.read(frames, dtype="float32", always_2d=True)
                except (soundfile.LibsndfileError, RuntimeError) as error:
                    warn(f"{name}: the stream broke off mid-frame ({str(error).strip() or 'decoder error'}); "
                         "transcribed up to there")
                    return
                if not len(block):
                    return
                yield block

    return AudioStream(sound.samplerate, blocks())


def _replayed(fd: int, head: bytes) -> int:
    """A pipe that gives ``head`` and then what follows it on ``fd``: libsndfile reads Ogg from a pipe
    as it arrives, but only from the stream's first byte, which has been read here to tell what it is.
    The first bytes are in the pipe before it is handed over: libsndfile tells the format from its first
    read of a pipe, and fails on one that finds too little there."""
    read_end, write_end = os.pipe()
    out = open(write_end, "wb", buffering=0)
    first = head
    while len(first) < OGG_FIRST_BYTES and (data := os.read(fd, OGG_FIRST_BYTES)):
        first += data
    out.write(first)  # at most twice OGG_FIRST_BYTES, which a pipe holds without a reader

    def copy() -> None:
        try:
            with out:
                while data := os.read(fd, READ_BYTES):
                    out.write(data)
        except OSError:  # the reader stopped early: nothing more to hand it
            pass

    threading.Thread(target=copy, name="asr-stream-copy", daemon=True).start()
    return read_end


class _Bytes:
    """A stream that cannot seek, seen as a file that can within the last ``KEEP_BYTES`` read: enough for
    libsndfile to go back over a FLAC frame and for the header to be read twice. Its length is unknown
    (said to be enormous), so libsndfile reads on until the stream ends."""

    def __init__(self, fd: int):
        self.fd = fd
        self.kept = bytearray()
        self.kept_from = 0  # the stream position of kept[0]
        self.position = 0
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes from ``position``, fewer only where the stream ends."""
        if self.position >= UNKNOWN_LENGTH:
            return b""
        while not self.ended and (size < 0 or self.kept_from + len(self.kept) < self.position + size):
            self._receive()
        return self._take(size)

    def read_available(self, most: int) -> bytes:
        """At most ``most`` bytes from ``position``: those already here, or what arrives next."""
        if self.kept_from + len(self.kept) <= self.position and not self.ended:
            self._receive()
        return self._take(most)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.position, os.SEEK_END: UNKNOWN_LENGTH}[whence]
        if base + offset < self.kept_from:
            raise OSError("cannot seek back that far in a stream")
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def _receive(self) -> None:
        data = os.read(self.fd, READ_BYTES)
        self.ended = not data
        self.kept += data
        excess = min(len(self.kept) - KEEP_BYTES, self.position - self.kept_from)  # never what is still unread
        if excess > 0:
            del self.kept[:excess]
            self.kept_from += excess

    def _take(self, size: int) -> bytes:
        start = self.position - self.kept_from
        data = bytes(self.kept[start:] if size < 0 else self.kept[start:start + size])
        self.position += len(data)
        return data
