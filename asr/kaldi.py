"""Kaldi data directories (text, wav.scp, utt2spk, segments) into manifests."""

from __future__ import annotations

import re
from pathlib import Path

from asr.corpora import (SPLITS, CorpusError, Recording, flac_converter, read_lines, require_folder, split_speakers,
                         write_splits)


_KALDI_MARKUP = re.compile(r"^(<[^>]*>|\[[^\]]*\])$")  # <unk>, [noise], <sil>: not words


def kaldi_recordings(data_dir: Path, split: str = "train", run_wav_commands: bool = False) -> list[Recording]:
    """A Kaldi data directory: ``wav.scp``, ``text``, and where present ``utt2spk`` (else each
    utterance is its own speaker) and ``segments``.

    Commands in ``wav.scp`` (``flac -c -d -s x.flac |``, ``sph2pipe -f wav x.sph |``) are
    refused unless ``run_wav_commands``: a data file that runs programs can do anything.
    Relative paths are looked up from the data directory and the three folders above it
    (recipes write them relative to the recipe folder).
    """
    require_folder(data_dir, "Kaldi data directory")
    data_dir = data_dir.resolve()
    wav_scp = data_dir / "wav.scp"
    audio = {key: _kaldi_audio(value, data_dir, f"{wav_scp}:{number}", run_wav_commands)
             for key, (value, number) in _kaldi_table(wav_scp).items()}
    texts = _kaldi_table(data_dir / "text", allow_empty=True)
    speakers = _kaldi_table(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else {}
    segments_file = data_dir / "segments"
    if segments_file.is_file():
        utterances = {key: _kaldi_segment(value, audio, f"{segments_file}:{number}")
                      for key, (value, number) in _kaldi_table(segments_file).items()}
    else:
        utterances = {key: (source, 0.0, None) for key, source in audio.items()}
    recordings = []
    for key, ((path, command), start, end) in utterances.items():
        if key not in texts:
            raise CorpusError(f"{data_dir / 'text'}: no transcript for utterance {key}")
        text = " ".join(word for word in texts[key][0].split() if not _KALDI_MARKUP.match(word))
        speaker = speakers[key][0] if key in speakers else key
        recordings.append(Recording(path, text, speaker, split, name=key, start=start, end=end, command=command))
    return recordings


def _kaldi_table(path: Path, allow_empty: bool = False) -> dict[str, tuple[str, int]]:
    """Key -> (rest of the line, line number) for a Kaldi table file."""
    table: dict[str, tuple[str, int]] = {}
    for number, line in enumerate(read_lines(path, "Kaldi data"), start=1):
        fields = line.strip().split(maxsplit=1)
        if not fields:
            continue
        if len(fields) == 1 and not allow_empty:
            raise CorpusError(f"{path}:{number}: expected '<id> <value>'")
        if fields[0] in table:
            raise CorpusError(f"{path}:{number}: {fields[0]} appears twice")
        table[fields[0]] = (fields[1] if len(fields) == 2 else "", number)
    return table


def _kaldi_audio(value: str, data_dir: Path, where: str, run_wav_commands: bool) -> tuple[Path, str]:
    """A wav.scp entry's file, or its command (with the wav.scp as its file)."""
    if value.endswith("|"):
        if not run_wav_commands:
            raise CorpusError(f"{where}: reads audio through a command ({value!r}), which is run only with "
                              "--run-wav-commands (for data you trust), or write the audio to files and list them")
        return data_dir / "wav.scp", value[:-1].strip()
    path = Path(value)
    candidates = [path] if path.is_absolute() else [base / path for base in (data_dir, *data_dir.parents[:3])]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, ""
    raise CorpusError(f"{where}: {value}: no such file"
                      + ("" if path.is_absolute() else f" (looked in {data_dir} and the three folders above it)"))


def _kaldi_segment(value: str, audio: dict[str, tuple[Path, str]], where: str
                   ) -> tuple[tuple[Path, str], float, float | None]:
    fields = value.split()
    try:
        recording, start, end = fields[0], float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise CorpusError(f"{where}: expected '<utterance> <recording> <start> <end>'") from None
    if recording not in audio:
        raise CorpusError(f"{where}: recording {recording} is not in wav.scp")
    if start < 0 or (end != -1 and end <= start):  # an end of -1 is the recording's end
        raise CorpusError(f"{where}: segment {start:g}-{end:g} s is empty or negative")
    return audio[recording], start, None if end == -1 else end


def prepare_kaldi(root: str | Path, out: str | Path, split: str = "train", dev_speakers: int | None = None,
                  seed: int = 0, run_wav_commands: bool = False, progress: bool = False) -> dict[str, int]:
    """One data directory as ``split``; from a training one, ``dev_speakers`` speakers (a tenth
    of them, at least one, by default) are held out for dev. ``run_wav_commands`` runs the
    commands wav.scp reads audio through, as :func:`kaldi_recordings` says."""
    check_kaldi_split(root, split, dev_speakers)
    out = Path(out)
    recordings = kaldi_recordings(Path(root), split, run_wav_commands)
    if split == "train":
        count = len({r.speaker for r in recordings})
        split_speakers(recordings, max(1, round(count / 10)) if dev_speakers is None else dev_speakers, seed)
    return write_splits(recordings, out, flac_converter(out, "kaldi"), "Kaldi", progress)


def check_kaldi_split(root: str | Path, split: str, dev_speakers: int | None) -> None:
    if split not in SPLITS:
        raise CorpusError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if split != "train" and dev_speakers is not None:
        raise CorpusError(f"dev speakers are held out of a training directory, and {root} is prepared as {split}")


