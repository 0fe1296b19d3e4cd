"""Turning public corpora, in the layouts they ship in, into manifests.

Each ``prepare_*`` function reads a corpus folder and writes ``train.jsonl``, ``dev.jsonl``
and ``test.jsonl`` where it has them: the corpus's own splits where it has its own, else dev
speakers carved out of the training speakers (never shared with train), or for a
single-speaker corpus, dev and test utterances. Audio already in 16 kHz mono WAV or FLAC is
used where it lies; anything else is written as 16 kHz FLAC under ``OUT/audio``.
Transcripts that cannot be written in the model's characters, and audio that cannot be read,
are skipped and counted. Converted audio is written atomically and reused by a rerun.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from asr.audio import RAW_SUFFIXES, SAMPLE_RATE, AudioError, RawFormat, audio_duration, load_audio
from asr.data import Utterance, write_manifest
from asr.errors import AsrError
from asr.files import move_into_place
from asr.terminal import progress_bar_options
from asr.text import TextError, Vocabulary, normalize_text

DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
AN4_RAW = RawFormat(sample_rate=16_000, byte_order="big")
SPLITS = ("train", "dev", "test")
log = logging.getLogger(__name__)


class CorpusError(AsrError):
    pass


@dataclass
class Recording:
    """One utterance of a corpus before preparation."""

    audio: Path
    text: str
    speaker: str
    split: str  # "train", "dev" or "test"
    name: str = ""  # unique in the corpus, names converted audio; the audio file's stem if empty
    subset: str = ""  # the corpus's own part (LibriSpeech's "test-clean"), also written as a manifest of its own
    start: float = 0.0  # a Kaldi segment of the audio file, in seconds; end None is the file's end
    end: float | None = None
    command: str = ""  # a Kaldi wav.scp command that writes the audio to its output; ``audio`` is then the wav.scp

    @property
    def key(self) -> str:
        return self.name or self.audio.stem


def split_speakers(recordings: list[Recording], dev_speakers: int, seed: int = 0) -> list[Recording]:
    """Move all recordings of ``dev_speakers`` randomly chosen training speakers to "dev"."""
    speakers = sorted({r.speaker for r in recordings if r.split == "train"})
    if not 0 <= dev_speakers < len(speakers):
        raise CorpusError(f"cannot hold out {dev_speakers} dev speakers: the corpus has {len(speakers)} training speakers")
    held_out = set(random.Random(seed).sample(speakers, dev_speakers))
    for recording in recordings:
        if recording.split == "train" and recording.speaker in held_out:
            recording.split = "dev"
    return recordings


def split_utterances(recordings: list[Recording], fraction: float, seed: int = 0) -> list[Recording]:
    """Move a random ``fraction`` of the training recordings (at least one) to "dev", and as many
    others to "test": for single-speaker corpora, where speakers cannot be held out."""
    check_holdout(fraction)
    train = [r for r in recordings if r.split == "train"]
    count = max(1, round(len(train) * fraction))
    if 2 * count >= len(train):
        raise CorpusError(f"cannot hold out {fraction:g} of {len(train)} utterances for dev and again for test "
                          "(it must leave training utterances)")
    chosen = random.Random(seed).sample(train, 2 * count)
    for index, recording in enumerate(chosen):
        recording.split = "dev" if index < count else "test"
    return recordings


def check_holdout(fraction: float) -> None:
    if not 0 < fraction < 0.5:
        raise CorpusError(f"cannot hold out {fraction:g} of the utterances for dev and again for test "
                          "(the share must be above 0 and below 0.5)")


def write_splits(recordings: list[Recording], out: Path, convert: Callable[[Recording], Path] | None = None,
                 desc: str = "preparing", progress: bool = False) -> dict[str, int]:
    """Skip transcripts outside the vocabulary and audio that cannot be read, convert audio
    where needed, measure durations, and write one manifest per split and per named subset.
    Returns utterances per split."""
    vocabulary = Vocabulary()
    manifests: dict[str, list[Utterance]] = {}
    skipped = []
    unreadable: list[AudioError] = []
    for recording in tqdm(recordings, desc=desc, unit="file", **progress_bar_options(progress)):
        text = normalize_text(recording.text)
        if not _writable(text, vocabulary):
            skipped.append(recording)
            continue
        try:
            audio = convert(recording) if convert else recording.audio
            utterance = Utterance(audio, audio_duration(audio), text)
        except AudioError as error:
            unreadable.append(error)
            continue
        for manifest in {recording.split, recording.subset} - {""}:
            manifests.setdefault(manifest, []).append(utterance)
    if skipped:
        log.warning("skipped %d of %d utterances: transcripts missing, empty or with characters outside a-z and ' "
                    "(first: %s%s)", len(skipped), len(recordings),
                    ", ".join(f"{r.key} {r.text!r}" for r in skipped[:3]), ", ..." if len(skipped) > 3 else "")
    if unreadable:
        log.warning("skipped %d of %d utterances: audio unreadable (%s%s)", len(unreadable), len(recordings),
                    "; ".join(map(str, unreadable[:3])), "; ..." if len(unreadable) > 3 else "")
    if not manifests:
        raise CorpusError(f"{out}: nothing to write: no utterance has both readable audio and a transcript "
                          "in the vocabulary")
    for name, utterances in manifests.items():
        write_manifest(out / f"{name}.jsonl", utterances)
    return {split: len(manifests[split]) for split in SPLITS if split in manifests}


def _writable(text: str, vocabulary: Vocabulary) -> bool:
    try:
        vocabulary.encode(text)
    except TextError:
        return False
    return bool(text)


def flac_converter(out: Path, corpus: str, raw: RawFormat | None = None) -> Callable[[Recording], Path]:
    """A ``convert`` for :func:`write_splits`: 16 kHz mono WAV and FLAC files are used where they
    lie; anything else, and any segment of a file, becomes 16-bit FLAC at
    ``OUT/audio/<corpus>/<split>/<key>.flac``, unless a rerun finds it there, newer than its
    source. ``raw`` is the layout of headerless files."""
    load = functools.lru_cache(maxsize=1)(load_audio)  # segments of one recording come one after another

    def convert(recording: Recording) -> Path:
        whole = recording.start == 0 and recording.end is None
        if whole and not recording.command and _is_16k_mono(recording.audio):
            return recording.audio
        target = out / "audio" / corpus / recording.split / f"{recording.key}.flac"
        if target.is_file() and target.stat().st_mtime >= recording.audio.stat().st_mtime:
            return target  # converted by an earlier run: written atomically, so complete
        target.parent.mkdir(parents=True, exist_ok=True)
        if recording.command:
            samples = run_command(recording.command, recording.audio, target.parent)
        else:
            samples = load(recording.audio, SAMPLE_RATE, raw if recording.audio.suffix.lower() in RAW_SUFFIXES else None)
        if not whole:
            stop = None if recording.end is None else round(recording.end * SAMPLE_RATE)
            duration = len(samples) / SAMPLE_RATE
            samples = samples[round(recording.start * SAMPLE_RATE):stop]
            if not samples.size:
                raise CorpusError(f"{recording.key}: segment from {recording.start:g} s lies outside "
                                  f"{recording.audio} ({duration:g} s long)")
        _write_flac(target, samples)
        return target

    run_command = functools.lru_cache(maxsize=1)(_piped_audio)  # as load: a recording's segments come together
    return convert


def _piped_audio(command: str, wav_scp: Path, scratch: Path) -> np.ndarray:
    """The audio a wav.scp command writes to its output (WAV, FLAC, SPHERE...), run by the shell as
    Kaldi runs it, from the recipe folder (the one above ``data/``), as 16 kHz mono samples."""
    result = subprocess.run(command, shell=True, cwd=wav_scp.parent.parent.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    if result.returncode != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"{wav_scp}: {command!r} failed ({said[-1][:160] if said else f'exit status {result.returncode}'})")
    with tempfile.NamedTemporaryFile(dir=scratch, prefix=".piped.") as output:
        output.write(result.stdout)
        output.flush()
        try:
            return load_audio(output.name)
        except AudioError as error:
            raise AudioError(f"{wav_scp}: {command!r} wrote no readable audio "
                             f"({str(error).removeprefix(output.name + ': ')})") from None


def _write_flac(target: Path, samples: np.ndarray) -> None:
    """Through a temporary file renamed into place, so that a run killed mid-write leaves no
    truncated FLAC for a rerun to take as converted."""
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", delete=False) as temporary:
        try:
            soundfile.write(temporary, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        except BaseException:
            Path(temporary.name).unlink()
            raise
    move_into_place(temporary.name, target)


def _is_16k_mono(path: Path) -> bool:
    if path.suffix.lower() not in (".wav", ".flac"):
        return False
    try:
        info = soundfile.info(path)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return False  # converting then reports the file properly
    return info.samplerate == SAMPLE_RATE and info.channels == 1


def require_folder(root: Path, what: str) -> None:
    if not root.is_dir():
        raise CorpusError(f"{root}: no such folder (expected the {what} corpus)")


def _corpus_folder(root: Path, what: str, inner: str) -> Path:
    """``root``, or ``root/inner`` where the corpus's archive was extracted into ``root``."""
    require_folder(root, what)
    return root / inner if (root / inner).is_dir() else root


def read_lines(path: Path, what: str) -> list[str]:
    """The file's lines, split at line ends only (str.splitlines would also split a transcript
    at U+2028, U+0085 or a form feed)."""
    if not path.is_file():
        raise CorpusError(f"{path}: missing (expected in the {what} layout)")
    try:
        return path.read_text(encoding="utf-8").split("\n")  # text mode reads \r\n and \r as \n
    except UnicodeDecodeError:
        raise CorpusError(f"{path}: not UTF-8 text") from None


def an4_recordings(root: Path) -> list[Recording]:
    """AN4 as CMU ships it: ``wav/an4_clstk/<speaker>/<utt>.raw`` (big-endian) or ``.sph``,
    transcripts in ``etc/an4_train.transcription`` and, in a full download, ``an4_test``."""
    root = _corpus_folder(root, "AN4", "an4")
    recordings = []
    for split, folder, transcripts in [("train", "an4_clstk", "an4_train.transcription"),
                                       ("test", "an4test_clstk", "an4_test.transcription")]:
        transcript_file = root / "etc" / transcripts
        if not transcript_file.is_file() and split == "test":
            continue
        lines = read_lines(transcript_file, "AN4")
        audio_files = {p.stem: p for p in (root / "wav" / folder).glob("*/*") if p.suffix in (".raw", ".sph", ".wav")}
        for number, line in enumerate(lines, start=1):
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


def prepare_an4(root: str | Path, out: str | Path, dev_speakers: int = 7, seed: int = 0,
                progress: bool = False) -> dict[str, int]:
    out = Path(out)
    recordings = split_speakers(an4_recordings(Path(root)), dev_speakers, seed)
    return write_splits(recordings, out, flac_converter(out, "an4", raw=AN4_RAW), "AN4", progress)


def fsdd_recordings(root: Path) -> list[Recording]:
    """FSDD's ``recordings/{digit}_{speaker}_{index}.wav``; the digit becomes its word."""
    require_folder(root, "FSDD")
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    recordings = []
    for path in sorted(folder.glob("*.wav")):
        match = re.fullmatch(r"(\d)_([^_]+)_(\d+)", path.stem)
        if match:
            recordings.append(Recording(path, DIGIT_WORDS[int(match.group(1))], match.group(2), "train"))
    if not recordings:
        raise CorpusError(f"{folder}: no FSDD recordings ({{digit}}_{{speaker}}_{{index}}.wav)")
    return recordings


def prepare_fsdd(root: str | Path, out: str | Path, dev_speakers: int = 1, seed: int = 0,
                 progress: bool = False) -> dict[str, int]:
    """FSDD has no speaker-disjoint test split of its own, so only train and dev are written."""
    recordings = split_speakers(fsdd_recordings(Path(root)), dev_speakers, seed)
    return write_splits(recordings, Path(out), desc="FSDD", progress=progress)


LIBRISPEECH_SUBSETS = {
    "train-clean-100": "train", "train-clean-360": "train", "train-other-500": "train",
    "dev-clean": "dev", "dev-other": "dev", "test-clean": "test", "test-other": "test",
    "train-clean-5": "train", "dev-clean-2": "dev",  # Mini LibriSpeech (OpenSLR 31)
}


def librispeech_recordings(root: Path, subsets: Sequence[str] | None = None) -> list[Recording]:
    """LibriSpeech's ``<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` and its FLAC
    files, for ``subsets`` (every subset in the folder if None)."""
    root = _corpus_folder(root, "LibriSpeech", "LibriSpeech")
    if subsets is None:
        subsets = [subset for subset in LIBRISPEECH_SUBSETS if (root / subset).is_dir()]
        if not subsets:
            raise CorpusError(f"{root}: no LibriSpeech subset folders ({', '.join(LIBRISPEECH_SUBSETS)})")
    recordings = []
    check_subsets(subsets)
    for subset in subsets:
        require_folder(root / subset, f"LibriSpeech {subset}")
        transcripts = sorted((root / subset).glob("*/*/*.trans.txt"))
        if not transcripts:
            raise CorpusError(f"{root / subset}: no <speaker>/<chapter>/*.trans.txt transcripts")
        for transcript in transcripts:
            for number, line in enumerate(read_lines(transcript, "LibriSpeech chapter"), start=1):
                utterance_id, _, text = line.strip().partition(" ")
                if not utterance_id:
                    continue
                audio = transcript.parent / f"{utterance_id}.flac"
                if not audio.is_file():
                    raise CorpusError(f"{transcript}:{number}: no audio file {audio.name}")
                recordings.append(Recording(audio, text, utterance_id.split("-")[0], LIBRISPEECH_SUBSETS[subset],
                                            subset=subset))
    return recordings


def check_subsets(subsets: Sequence[str]) -> None:
    for subset in subsets:
        if subset not in LIBRISPEECH_SUBSETS:
            raise CorpusError(f"{subset}: not a LibriSpeech subset ({', '.join(LIBRISPEECH_SUBSETS)})")


def prepare_librispeech(root: str | Path, out: str | Path, subsets: Sequence[str] | None = None,
                        progress: bool = False) -> dict[str, int]:
    """Train, dev and test from LibriSpeech's own subsets, and a manifest per subset
    (``test-clean.jsonl``, ...) for results comparable with the literature."""
    out = Path(out)
    return write_splits(librispeech_recordings(Path(root), subsets), out, flac_converter(out, "librispeech"),
                        "LibriSpeech", progress)


def ljspeech_recordings(root: Path) -> list[Recording]:
    """LJSpeech's ``metadata.csv`` (``id|text|normalized text``) and ``wavs/<id>.wav``; the
    normalized text, with numbers and abbreviations spelled out, is the transcript."""
    root = _corpus_folder(root, "LJSpeech", "LJSpeech-1.1")
    metadata = root / "metadata.csv"
    recordings = []
    for number, line in enumerate(read_lines(metadata, "LJSpeech"), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 3:
            raise CorpusError(f"{metadata}:{number}: expected 'id|text|normalized text', found {len(fields)} fields")
        audio = root / "wavs" / f"{fields[0]}.wav"
        if not audio.is_file():
            raise CorpusError(f"{metadata}:{number}: no audio file {audio}")
        recordings.append(Recording(audio, fields[2], "LJ", "train"))
    return recordings


def prepare_ljspeech(root: str | Path, out: str | Path, holdout: float = 0.05, seed: int = 0,
                     progress: bool = False) -> dict[str, int]:
    """One speaker, so dev and test are each a random ``holdout`` share of the utterances."""
    out = Path(out)
    recordings = split_utterances(ljspeech_recordings(Path(root)), holdout, seed)
    return write_splits(recordings, out, flac_converter(out, "ljspeech"), "LJSpeech", progress)


def commonvoice_recordings(root: Path) -> list[Recording]:
    """A Common Voice language folder: ``train.tsv``, ``dev.tsv``, ``test.tsv`` (with ``path``,
    ``sentence`` and ``client_id`` columns) and the MP3 files in ``clips/``."""
    require_folder(root, "Common Voice")
    tables = {split: root / f"{split}.tsv" for split in SPLITS if (root / f"{split}.tsv").is_file()}
    if not tables:
        raise CorpusError(f"{root}: no train.tsv, dev.tsv or test.tsv (expected a Common Voice language folder)")
    recordings = []
    for split, table in tables.items():
        lines = read_lines(table, "Common Voice")
        header = lines[0].split("\t") if lines else []
        if not {"path", "sentence"} <= set(header):
            raise CorpusError(f"{table}: its header has no 'path' and 'sentence' columns (not a Common Voice tsv)")
        for number, line in enumerate(lines[1:], start=2):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != len(header):
                raise CorpusError(f"{table}:{number}: {len(fields)} tab-separated fields, the header has {len(header)}")
            row = dict(zip(header, fields))
            clip = row["path"] if Path(row["path"]).suffix else f"{row['path']}.mp3"  # early releases omit it
            audio = root / "clips" / clip
            if not audio.is_file():
                raise CorpusError(f"{table}:{number}: no audio file {audio}")
            recordings.append(Recording(audio, row["sentence"], row.get("client_id") or audio.stem, split))
    return recordings


def prepare_commonvoice(root: str | Path, out: str | Path, progress: bool = False) -> dict[str, int]:
    """Common Voice's own splits (speaker-disjoint); MP3 is converted to FLAC, which decodes
    far faster in training."""
    out = Path(out)
    return write_splits(commonvoice_recordings(Path(root)), out, flac_converter(out, "commonvoice"),
                        "Common Voice", progress)
