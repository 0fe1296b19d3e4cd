"""Turning public corpora, in the layouts they ship in, into manifests.

Each ``prepare_*`` function reads a corpus folder and writes ``train.jsonl``, ``dev.jsonl``
(speakers carved out of the training speakers, never shared with train) and, where the
corpus has one, ``test.jsonl``. Audio that needs converting is written as 16 kHz FLAC
under ``OUT/audio``.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile
from tqdm import tqdm

from asr.audio import SAMPLE_RATE, RawFormat, audio_duration, load_audio
from asr.data import Utterance, write_manifest
from asr.errors import AsrError
from asr.text import normalize_text

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AN4_RAW = RawFormat(sample_rate=16_000, byte_order="big")


class CorpusError(AsrError):
    pass


@dataclass
class Recording:
    """One utterance of a corpus before preparation."""

    audio: Path
    text: str
    speaker: str
    split: str  # "train" or "test"


def split_speakers(recordings: list[Recording], dev_speakers: int, seed: int = 0) -> list[Recording]:
    """Move all recordings of ``dev_speakers`` randomly chosen training speakers to "dev"."""
    speakers = sorted({r.speaker for r in recordings if r.split == "train"})
    if dev_speakers >= len(speakers):
        raise CorpusError(f"cannot hold out {dev_speakers} dev speakers: the corpus has {len(speakers)} training speakers")
    held_out = set(random.Random(seed).sample(speakers, dev_speakers))
    for recording in recordings:
        if recording.split == "train" and recording.speaker in held_out:
            recording.split = "dev"
    return recordings


def write_splits(recordings: list[Recording], out: Path, convert: Callable[[Recording], Path] | None = None,
                 desc: str = "preparing") -> dict[str, int]:
    """Convert audio where needed, measure durations, and write one manifest per split."""
    splits: dict[str, list[Utterance]] = {}
    for recording in tqdm(recordings, desc=desc, unit="file"):
        audio = convert(recording) if convert else recording.audio
        duration = audio_duration(audio)
        splits.setdefault(recording.split, []).append(Utterance(audio, duration, normalize_text(recording.text)))
    for split, utterances in splits.items():
        write_manifest(out / f"{split}.jsonl", utterances)
    return {split: len(utterances) for split, utterances in splits.items()}


def _require_folder(root: Path, what: str) -> None:
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder (expected the {what} corpus)")


def an4_recordings(root: Path) -> list[Recording]:
    """AN4 as CMU ships it: ``wav/an4_clstk/<speaker>/<utt>.raw`` (big-endian) or ``.sph``,
    transcripts in ``etc/an4_train.transcription`` and, in a full download, ``an4_test``."""
    _require_folder(root, "AN4")
    recordings = []
    for split, folder, transcripts in [("train", "an4_clstk", "an4_train.transcription"),
                                       ("test", "an4test_clstk", "an4_test.transcription")]:
        transcript_file = root / "etc" / transcripts
        if not transcript_file.is_file():
            if split == "train":
                raise CorpusError(f"{transcript_file}: missing (is {root} an AN4 folder?)")
            continue
        audio_files = {p.stem: p for p in (root / "wav" / folder).glob("*/*") if p.suffix in (".raw", ".sph", ".wav")}
        for number, line in enumerate(transcript_file.read_text().splitlines(), start=1):
            match = re.fullmatch(r"\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*", line)
            if not line.strip():
                continue
            if not match:
                raise CorpusError(f"{transcript_file}:{number}: not '<s> TEXT </s> (utterance-id)'")
            text, utterance_id = match.group(1).strip(), match.group(2)
            if utterance_id not in audio_files:
                raise CorpusError(f"{transcript_file}:{number}: no audio file for {utterance_id}")
            audio = audio_files[utterance_id]
            recordings.append(Recording(audio, text, speaker=audio.parent.name, split=split))
    return recordings


def prepare_an4(root: str | Path, out: str | Path, dev_speakers: int = 7, seed: int = 0) -> dict[str, int]:
    root, out = Path(root), Path(out)
    recordings = split_speakers(an4_recordings(root), dev_speakers, seed)

    def to_flac(recording: Recording) -> Path:
        target = out / "audio" / "an4" / recording.split / f"{recording.audio.stem}.flac"
        target.parent.mkdir(parents=True, exist_ok=True)
        raw = AN4_RAW if recording.audio.suffix == ".raw" else None
        soundfile.write(target, load_audio(recording.audio, SAMPLE_RATE, raw=raw), SAMPLE_RATE, subtype="PCM_16")
        return target

    return write_splits(recordings, out, to_flac, desc="AN4")


def fsdd_recordings(root: Path) -> list[Recording]:
    """FSDD's ``recordings/{digit}_{speaker}_{index}.wav``; the digit becomes its word."""
    _require_folder(root, "FSDD")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    recordings = []
    for path in sorted(folder.glob("*.wav")):
        match = re.fullmatch(r"(\d)_([^_]+)_(\d+)", path.stem)
        if match:
            recordings.append(Recording(path, DIGIT_WORDS[int(match.group(1))], match.group(2), "train"))
    if not recordings:
        raise CorpusError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav)")
    return recordings


def prepare_fsdd(root: str | Path, out: str | Path, dev_speakers: int = 1, seed: int = 0) -> dict[str, int]:
    """FSDD has no speaker-disjoint test split of its own, so only train and dev are written."""
    recordings = split_speakers(fsdd_recordings(Path(root)), dev_speakers, seed)
    return write_splits(recordings, Path(out), desc="FSDD")


CORPORA: dict[str, Callable[..., dict[str, int]]] = {"an4": prepare_an4, "fsdd": prepare_fsdd}


def summarize(counts: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{split}: {count} utterances" for split, count in counts)
