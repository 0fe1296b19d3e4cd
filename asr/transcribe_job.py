"""``asr transcribe`` as a batch job: files, folders and glob patterns in; each transcript printed,
or written atomically into an output folder that mirrors the folders given, as soon as it is done;
a progress bar and a closing summary on stderr. The engine it drives, ``asr.transcribe``, prints nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from asr.audio import AUDIO_SUFFIXES, RAW_SUFFIXES, RawFormat, audio_duration
from asr.decoding import Decoder
from asr.errors import AsrError
from asr.files import write_text_atomically
from asr.segment import SegmentOptions
from asr.subtitles import to_srt, to_vtt
from asr.terminal import progress_bar_options, quiet_c_stderr
from asr.transcribe import Recognizer, TranscribeError, Transcript, transcribe_files

@dataclass
class AudioFile:
    """A file to transcribe; ``root`` is the folder it was found in, whose layout the outputs mirror."""

    path: Path
    root: Path | None = None



def find_audio(inputs: Sequence[str | os.PathLike]) -> tuple[list[AudioFile], list[str]]:
    """The files that files, folders (searched recursively) and glob patterns name, and a one-line
    problem for each folder or pattern that names none. A path that does not exist is kept, to be
    reported when it is read; hidden files and folders are skipped; a file named twice is kept once."""
    found: list[AudioFile] = []
    problems: list[str] = []
    for given in map(str, inputs):
        matches = [given] if os.path.lexists(given) or not glob.has_magic(given) else sorted(glob.glob(given, recursive=True))
        if not matches:
            problems.append(f"{given}: no files match this pattern")
        for match in map(Path, matches):
            if match.is_dir():
                inside = [AudioFile(path, match) for path in _walk(match)]
                if not inside:
                    problems.append(f"{match}: no audio files in this folder")
                found.extend(inside)
            else:
                found.append(AudioFile(match))
    unique = {os.path.realpath(file.path): file for file in reversed(found)}
    return [file for file in found if unique[os.path.realpath(file.path)] is file], problems


def _walk(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*")
                  if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file()
                  and not any(part.startswith(".") for part in path.relative_to(folder).parts))


def format_transcript(transcript: Transcript, format: str) -> str:
    """The transcript as its output file's text: txt, json (with word timings), srt or vtt."""
    if format == "json":
        return json.dumps({"path": transcript.path, "text": transcript.text, "duration": round(transcript.duration, 3),
                           "words": [dataclasses.asdict(word) for word in transcript.words]}) + "\n"
    if format == "srt":
        return to_srt(transcript.words)
    if format == "vtt":
        return to_vtt(transcript.words)
    return transcript.text + "\n"


def output_path(transcript: Transcript, output_dir: Path, format: str, root: Path | None = None) -> Path:
    """Where a transcript is written: beside the others, or where the file sits under ``root``, if it was found in one."""
    path = Path(transcript.path)
    return output_dir / (path.relative_to(root) if root is not None else Path(path.name)).with_suffix(f".{format}")


@dataclass
class JobSummary:
    transcribed: int = 0
    failed: int = 0
    skipped: int = 0
    audio_seconds: float = 0.0
    seconds: float = 0.0  # wall-clock time of the job

    def __str__(self) -> str:
        rate = f", real-time factor {self.seconds / self.audio_seconds:.4f}" if self.audio_seconds else ""
        return (f"{self.transcribed} transcribed, {self.failed} failed, {self.skipped} skipped: "
                f"{self.audio_seconds / 3600:.2f} h of audio in {self.seconds:.1f} s{rate}")


@dataclass
class Job:
    """What ``asr transcribe`` is to do, settled before a model is loaded."""

    files: list[AudioFile]
    problems: list[str]  # one line for each folder or pattern that names no file
    format: str = "txt"
    output_dir: Path | None = None
    outputs: dict[str, Path] = field(default_factory=dict)  # each file's output file, with an output_dir
    skipped: int = 0  # files whose output file exists already, with skip_existing


def plan_job(inputs: Sequence[str | os.PathLike], format: str = "txt", output_dir: Path | None = None,
             skip_existing: bool = False) -> Job:
    """Find the files that files, folders and patterns name, and refuse options that cannot work with
    them, before any model is loaded and any audio read."""
    if skip_existing and output_dir is None:
        raise TranscribeError("--skip-existing needs --output-dir, where the finished transcripts are")
    if output_dir is not None:
        _check_folder(output_dir)
    job = Job(*find_audio(inputs), format, output_dir)
    if output_dir is None and format in ("srt", "vtt") and len(job.files) > 1:
        raise TranscribeError(f"--format {format}: a subtitle document holds one file's transcript; give --output-dir "
                              f"to write one for each of the {len(job.files)} files")
    if output_dir is not None:
        job.outputs = {str(file.path): output_path(Transcript(str(file.path)), output_dir, format, file.root)
                       for file in job.files}
        _check_distinct(job.outputs)
        if skip_existing:
            job.files = [file for file in job.files if not job.outputs[str(file.path)].exists()]
            job.skipped = len(job.outputs) - len(job.files)
    return job


def transcribe_job(recognizer: Recognizer, decoder: Decoder, job: Job, batch_seconds: float = 60.0,
                   raw: RawFormat | None = None, workers: int = 2, progress: bool = False,
                   segmenting: SegmentOptions = SegmentOptions()) -> JobSummary:
    """``asr transcribe``: transcribe the job's files, writing each transcript as soon as it is done
    (atomically, into its output folder) or printing it; a file that fails is one ``error:`` line on
    stderr and the rest go on. With ``progress``, a progress bar; with it or an output folder, a closing
    summary line on stderr (printed transcripts alone on a pipe stay clean)."""
    started = time.perf_counter()
    files, format, output_dir = job.files, job.format, job.output_dir
    summary = JobSummary(failed=len(job.problems), skipped=job.skipped)
    for problem in job.problems:
        print(f"error: {problem}", file=sys.stderr)
    total = sum(_duration_or_zero(file.path, raw) for file in files) / 3600 if progress else None
    with quiet_c_stderr(), tqdm(total=total, unit="h", desc="transcribing", bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} h "
              "[{elapsed}<{remaining}{postfix}]", **progress_bar_options(progress)) as bar:

        done = 0.0

        def advance(seconds: float) -> None:
            nonlocal done
            done += seconds
            bar.update(seconds / 3600)
            bar.set_postfix_str(f"real-time factor {(time.perf_counter() - started) / done:.3f}", refresh=False)

        results = transcribe_files(recognizer, [file.path for file in files], decoder, batch_seconds, raw,
                                   segmenting, workers, advance)
        with contextlib.closing(results):
            for result in results:
                if result.error is not None:
                    summary.failed += 1
                    tqdm.write(f"error: {result.error}", file=sys.stderr)
                    continue
                summary.transcribed += 1
                summary.audio_seconds += result.duration
                if output_dir is not None:
                    target = job.outputs[result.path]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomically(target, format_transcript(result, format))
                elif format == "txt" and len(files) > 1:
                    tqdm.write(f"{result.path}\t{result.text}", file=sys.stdout)
                else:
                    tqdm.write(format_transcript(result, format), file=sys.stdout, end="")
    summary.seconds = time.perf_counter() - started
    if progress or output_dir is not None:
        print(summary, file=sys.stderr)
    return summary


def _check_folder(output_dir: Path) -> None:
    """Refuse an output folder that is a file, or lies inside one, rather than fail on it after the work."""
    existing = next(path for path in (output_dir, *output_dir.parents) if path.exists())
    if not existing.is_dir():
        named = "it" if existing == output_dir else str(existing)
        raise TranscribeError(f"--output-dir {output_dir}: {named} is a file, not a folder")


def _check_distinct(outputs: dict[str, Path]) -> None:
    writers: dict[Path, str] = {}
    for path, target in outputs.items():
        if target in writers:
            raise TranscribeError(f"{writers[target]} and {path} would both be written to {target}; "
                                  "rename one or transcribe them into different --output-dir folders")
        writers[target] = path


def _duration_or_zero(path: Path, raw: RawFormat | None) -> float:
    try:
        return audio_duration(path, raw if path.suffix.lower() in RAW_SUFFIXES else None)
    except AsrError:
        return 0.0
