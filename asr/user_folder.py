"""A user's own recordings, as people keep them, into manifests: audio files each with a same-named .txt
beside it, or one metadata.csv/.tsv with a file column and a text column (LJSpeech's id|text included)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from asr.audio import AUDIO_SUFFIXES, RAW_SUFFIXES
from asr.corpora import CorpusError, Recording, flac_converter, read_lines, require_folder, write_splits


FILE_COLUMNS = ("file", "filename", "file_name", "path", "audio", "audio_filepath", "wav", "id")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")


def folder_recordings(root: Path) -> list[Recording]:
    """A user's own recordings: ``metadata.csv`` or ``metadata.tsv`` in ``root`` if there is one, else every
    audio file under it (searched recursively) with its transcript in a ``.txt`` of the same name beside it.
    A file without one is kept with an empty transcript, for :func:`write_splits` to skip and count."""
    require_folder(root, "recordings")
    tables = [root / name for name in ("metadata.csv", "metadata.tsv") if (root / name).is_file()]
    if tables:
        return _metadata_recordings(tables[0])
    audio = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES - RAW_SUFFIXES and p.is_file())
    if not audio:
        raise CorpusError(f"{root}: no audio files and no metadata.csv or metadata.tsv")
    return [Recording(path, _transcript_beside(path), "user", "train",
                      name=path.relative_to(root).with_suffix("").as_posix().replace("/", "_")) for path in audio]


def _transcript_beside(audio: Path) -> str:
    """The text of the .txt of the same name (its lines joined), or "" where there is none."""
    text_file = audio.with_suffix(".txt")
    return " ".join(read_lines(text_file, "transcript")).strip() if text_file.is_file() else ""


def _metadata_recordings(table: Path) -> list[Recording]:
    """Rows of a file column and a text column: with a header naming them (``file,text``, ``path<TAB>sentence``,
    ...), or without one, the first column the file and the last the text (LJSpeech's ``id|text|normalized``).
    A .csv is split at ``|`` where its first line has one, else at commas."""
    lines = [line for line in read_lines(table, "metadata") if line.strip()]
    delimiter = "\t" if table.suffix == ".tsv" else "|" if lines and "|" in lines[0] else ","
    quoting = csv.QUOTE_NONE if delimiter == "|" else csv.QUOTE_MINIMAL  # LJSpeech's texts hold bare quotes
    rows = list(csv.reader(lines, delimiter=delimiter, quoting=quoting))
    header = [field.strip().lower() for field in rows[0]] if rows else []
    file_column = next((header.index(name) for name in FILE_COLUMNS if name in header), None)
    text_column = next((header.index(name) for name in TEXT_COLUMNS if name in header), None)
    if file_column is None or text_column is None:
        file_column, text_column, start = 0, -1, 0
    else:
        start = 1
    recordings = []
    for number, row in enumerate(rows[start:], start=start + 1):
        if len(row) < 2:
            raise CorpusError(f"{table}:{number}: expected a file and a text column, found {len(row)} field")
        audio = _metadata_audio(table.parent, row[file_column].strip())
        if audio is None:
            raise CorpusError(f"{table}:{number}: no audio file {row[file_column].strip()!r} in {table.parent}")
        recordings.append(Recording(audio, row[text_column].strip(), "user", "train"))
    if not recordings:
        raise CorpusError(f"{table}: no rows")
    return recordings


def _metadata_audio(folder: Path, name: str) -> Path | None:
    """``name`` in ``folder`` or its ``wavs/`` (LJSpeech's), with any audio suffix where it has none."""
    for base in (folder, folder / "wavs"):
        suffixes = [""] if Path(name).suffix else sorted(AUDIO_SUFFIXES)
        candidates = [base / (name + suffix) for suffix in suffixes]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def prepare_folder(root: str | Path, out: str | Path, dev_share: float = 0.0, seed: int = 0,
                   progress: bool = False) -> dict[str, int]:
    """``OUT/train.jsonl`` from a folder of recordings (see :func:`folder_recordings`) and, with ``dev_share``,
    ``OUT/dev.jsonl`` from that share of them, drawn at random (seeded)."""
    check_dev_share(dev_share)
    out = Path(out)
    recordings = folder_recordings(Path(root))
    if dev_share:
        count = max(1, round(len(recordings) * dev_share))
        if count >= len(recordings):
            raise CorpusError(f"a dev share of {dev_share:g} of {len(recordings)} recordings leaves none to train on")
        for recording in random.Random(seed).sample(recordings, count):
            recording.split = "dev"
    return write_splits(recordings, out, flac_converter(out, "folder"), "recordings", progress)


def check_dev_share(share: float) -> None:
    if not 0 <= share < 1:
        raise CorpusError(f"the dev share must be at least 0 and below 1, not {share:g}")


